"""Streaming multipart upload: request body -> UploadWriter, without a temporary file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from flask import request
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from dms.engine.catalog import TableDef
from dms.engine.errors import (
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    TableNotFound,
    ValidationFailed,
)
from dms.engine.uploads import (
    UploadOptions,
    UploadWriter,
    check_active_imports,
    check_header,
    header_complete,
)
from dms.services import services
from dms.tables import import_jobs

READ_BYTES = 256 * 1024
MAX_FIELD_BYTES = 4096
FORM_FIELDS = ("table_name", "owner", "on_error", "delimiter", "encoding", "ignore_unknown_columns")


def receive_upload(
    user_id: int, resolve_table: Callable[[dict[str, str]], TableDef]
) -> tuple[str, bool]:
    """Store the request's multipart CSV as a queued job; return (job id, created)."""
    boundary = _boundary()
    svc = services()
    max_bytes = int(svc.config["DMS_MAX_UPLOAD_BYTES"])
    if request.content_length is not None and request.content_length > max_bytes + 65536:
        raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes")
    # The app-wide limit is the JSON one (1 MiB); this endpoint allows the upload limit plus
    # room for the multipart framing and form fields.
    request.max_content_length = max_bytes + 65536
    key = (request.headers.get("Idempotency-Key") or "").strip() or None
    if key is not None and (len(key) > 255 or not key.isprintable()):
        raise ValidationFailed("bad Idempotency-Key", errors={"Idempotency-Key": ["1-255 chars"]})
    engine = svc.db.engine
    if key is None or _job_with_key(engine, user_id, key) is None:
        # A repeat of a stored upload answers with its job (or 409), whatever the limit.
        check_active_imports(engine, user_id, int(svc.config["DMS_MAX_ACTIVE_IMPORTS"]))
    try:
        with engine.begin() as conn:
            writer = UploadWriter(conn, user_id, max_bytes)
            writer.start()
            state = _Parse(writer, resolve_table)
            for event in _events(boundary, max_bytes):
                state.feed(event)
            table, options = state.finish()
            job_id, created = writer.finish(table, options, key)
            if not created:
                conn.rollback()  # a repeated upload: keep nothing of this copy
        return job_id, created
    except IntegrityError as exc:
        if isinstance(exc.orig, psycopg.errors.ForeignKeyViolation):
            raise TableNotFound("the table was deleted while the file was uploaded") from None
        if key is None or not isinstance(exc.orig, psycopg.errors.UniqueViolation):
            raise
        # Two uploads raced with one Idempotency-Key: the other one committed first.
        row = _job_with_key(engine, user_id, key)
        if row is None or row.content_sha256 != writer.content_sha256:
            raise IdempotencyConflict(
                "this Idempotency-Key was used for a different file"
            ) from None
        return row.id, False


def _job_with_key(engine: Engine, user_id: int, key: str) -> Any:
    """Return the caller's job stored under Idempotency-Key `key` (id, digest), or None."""
    with engine.connect() as conn:
        return conn.execute(
            select(import_jobs.c.id, import_jobs.c.content_sha256).where(
                import_jobs.c.user_id == user_id, import_jobs.c.idempotency_key == key
            )
        ).first()


class _Parse:
    """Collect form fields and file bytes; check the header as soon as both are known."""

    def __init__(self, writer: UploadWriter, resolve: Callable[[dict[str, str]], TableDef]):
        self.writer = writer
        self.resolve = resolve
        self.form: dict[str, str] = {}
        self.current: str | None = None
        self.field_value = bytearray()
        self.files = 0
        self.table: TableDef | None = None
        self.options: dict[str, Any] | None = None

    def feed(self, event: Any) -> None:
        if isinstance(event, Field):
            if not event.name:
                raise ValidationFailed("a form part has no name", errors={"form": ["unnamed part"]})
            self.current, self.field_value = event.name, bytearray()
        elif isinstance(event, File):
            if event.name != "file":
                where = (event.name or "form")[:80]
                raise ValidationFailed(
                    "send the CSV as the 'file' part", errors={where: ["unexpected file"]}
                )
            self.files += 1
            if self.files > 1:
                raise ValidationFailed("send exactly one file", errors={"file": ["only one"]})
            self.current = "\0file"
        elif isinstance(event, Data):
            if self.current == "\0file":
                self.writer.write(event.data)
                self._check_early()
            else:
                self.field_value += event.data
                if len(self.field_value) > MAX_FIELD_BYTES:
                    raise ValidationFailed(
                        "form field too long", errors={str(self.current): ["too long"]}
                    )
                if not event.more_data and self.current is not None:
                    self._set_field(self.current, bytes(self.field_value))

    def _set_field(self, name: str, value: bytes) -> None:
        if name not in FORM_FIELDS:
            raise ValidationFailed("unknown form field", errors={name[:80]: ["unknown field"]})
        try:
            self.form[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed(
                "form fields must be UTF-8", errors={name: ["not UTF-8"]}
            ) from None

    def _check_early(self) -> None:
        # Usually the fields come before the file: refuse a bad header before reading gigabytes.
        if self.options is None and "table_name" in self.form and header_complete(self.writer.head):
            self._check()

    def _check(self) -> None:
        self.table = self.resolve(self.form)
        self.options = check_header(
            self.table, self.writer.head, UploadOptions.from_form(self.form)
        )

    def finish(self) -> tuple[TableDef, dict[str, Any]]:
        if self.files == 0:
            raise ValidationFailed("no file in the upload", errors={"file": ["required"]})
        if "table_name" not in self.form:
            raise ValidationFailed("table_name is required", errors={"table_name": ["required"]})
        if self.options is None:
            self._check()
        assert self.table is not None and self.options is not None
        return self.table, self.options


def _boundary() -> bytes:
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send the CSV as multipart/form-data with a 'file' part")
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise InvalidRequest("multipart/form-data needs a boundary")
    return boundary.encode("latin-1")


def _events(boundary: bytes, max_bytes: int) -> Any:
    decoder = MultipartDecoder(boundary, max_form_memory_size=max(8 * READ_BYTES, 1 << 20))
    stream = request.stream
    received, ended = 0, False
    while True:
        try:
            event = decoder.next_event()
        except ValueError as exc:
            raise InvalidRequest("malformed multipart/form-data body") from exc
        if isinstance(event, NeedData):
            if ended:
                raise InvalidRequest("the multipart/form-data body ended early")
            data = stream.read(READ_BYTES)
            received += len(data)
            if received > max_bytes + 65536:
                raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes")
            ended = not data
            decoder.receive_data(data or None)
            continue
        if isinstance(event, Epilogue):
            return
        yield event
