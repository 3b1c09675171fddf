"""Uploads: the CSV streamed into PostgreSQL as ordered chunks, its header checked, the job queued.

Bytes never touch a local disk and are never held whole in memory, so any worker on any host can
run the import. The whole upload is one transaction: a refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from dms.engine.catalog import TableDef
from dms.engine.csvreader import detect_format, read_records
from dms.engine.errors import (
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from dms.engine.identifiers import name_of
from dms.engine.import_sweep import ACTIVE
from dms.tables import import_jobs, upload_chunks

CHUNK_BYTES = 1 << 20
MAX_HEADER_BYTES = 1 << 20
ON_ERROR = ("skip", "abort")


@dataclass(frozen=True)
class UploadOptions:
    """What the uploader chose (form fields)."""

    on_error: str = "skip"
    delimiter: str | None = None
    encoding: str | None = None
    ignore_unknown_columns: bool = False

    @classmethod
    def from_form(cls, form: dict[str, str]) -> UploadOptions:
        """Return options from form fields, or raise 400 naming the bad field."""
        errors: dict[str, list[str]] = {}
        on_error = (form.get("on_error") or "skip").strip().lower()
        if on_error not in ON_ERROR:
            errors["on_error"] = ["must be skip or abort"]
        flag = (form.get("ignore_unknown_columns") or "false").strip().lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            errors["ignore_unknown_columns"] = ["must be true or false"]
        if errors:
            raise ValidationFailed("invalid upload options", errors=errors)
        delimiter = form.get("delimiter") or None
        if delimiter in ("\\t", "tab", "TAB"):
            delimiter = "\t"  # a literal tab is awkward to type in a form field
        return cls(
            on_error=on_error,
            delimiter=delimiter,
            encoding=(form.get("encoding") or None),
            ignore_unknown_columns=flag in ("true", "1", "yes"),
        )


def check_header(table: TableDef, head: bytes, options: UploadOptions) -> dict[str, Any]:
    """Return the job's reading options after checking the header against the table (or 400)."""
    encoding, delimiter, _ = detect_format(
        head, encoding=options.encoding, delimiter=options.delimiter
    )
    header = next(read_records([head], encoding=encoding, delimiter=delimiter), None)
    if header is None or header.fields is None:
        raise InvalidRequest("the file is empty: it needs a header row naming columns")
    names = [name_of(field.strip()) for field in header.fields]
    known = {c.name for c in table.columns}
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    columns: list[str | None] = []
    for position, name in enumerate(names, start=1):
        if not name:
            errors.setdefault("header", []).append(f"column {position} has a blank name")
        elif name in seen:
            errors.setdefault("header", []).append(f"{name!r} appears twice")
        elif name not in known and not options.ignore_unknown_columns:
            errors.setdefault("header", []).append(f"{name[:80]!r} is not a column of the table")
        seen.add(name)
        columns.append(name if name in known else None)
    missing = [c.name for c in table.columns if c.spec.required and c.name not in seen]
    if missing:
        errors.setdefault("header", []).append(
            "missing required column(s) without a default: " + ", ".join(missing)
        )
    if errors:
        raise ValidationFailed("the header does not fit the table", errors=errors)
    # What the worker reads the file with: no more (the job list loads these for every job).
    return {
        "encoding": encoding,
        "delimiter": delimiter,
        "on_error": options.on_error,
        "columns": columns,
    }


def check_active_imports(engine: Engine, user_id: int, limit: int) -> None:
    """Raise RateLimited when the user already has `limit` queued or running imports."""
    with engine.connect() as conn:
        active = conn.execute(
            select(func.count())
            .select_from(import_jobs)
            .where(import_jobs.c.user_id == user_id, import_jobs.c.status.in_(ACTIVE))
        ).scalar_one()
    if active >= limit:
        raise RateLimited(
            f"you already have {active} imports queued or running (at most {limit}); "
            "wait for one to end",
            detail={"retry_after": 10},
        )


def header_complete(head: bytes) -> bool:
    """Return True once `head` holds the whole first line (ignoring quoted newlines' subtlety)."""
    # A quoted header name containing a newline is pathological; the 1 MiB cap bounds it anyway.
    return b"\n" in head.lstrip(b"\r\n") or len(head) >= MAX_HEADER_BYTES


@dataclass
class UploadWriter:
    """Write one upload's bytes as chunk rows inside the caller's transaction."""

    conn: Connection
    user_id: int
    max_bytes: int
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    size: int = 0
    head: bytes = b""
    _buffer: bytearray = field(default_factory=bytearray)
    _seq: int = 0
    _flushed: int = 0
    _sha: Any = field(default_factory=hashlib.sha256)

    def start(self) -> None:
        """Insert the job row (status 'uploading') the chunks hang off; finish names the table."""
        self.conn.execute(
            insert(import_jobs).values(
                id=self.job_id, user_id=self.user_id, table_name="", status="uploading", options={}
            )
        )

    def write(self, data: bytes) -> None:
        """Append bytes; full chunks go to PostgreSQL at once."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"the upload is larger than {self.max_bytes} bytes")
        self._sha.update(data)
        if len(self.head) < MAX_HEADER_BYTES:
            self.head += data[: MAX_HEADER_BYTES - len(self.head)]
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            self._flush(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _flush(self, data: bytes) -> None:
        self.conn.execute(
            insert(upload_chunks).values(
                job_id=self.job_id, seq=self._seq, start_offset=self._flushed, data=data
            )
        )
        self._seq += 1
        self._flushed += len(data)

    @property
    def content_sha256(self) -> str:
        """Return the SHA-256 (hex) of the bytes written so far."""
        return str(self._sha.hexdigest())

    def finish(
        self, table: TableDef, options: dict[str, Any], idempotency_key: str | None
    ) -> tuple[str, bool]:
        """Queue the job; return (job id, True) or the existing job for a repeated upload."""
        if self._buffer:
            self._flush(bytes(self._buffer))
            self._buffer.clear()
        if self.size == 0:
            raise InvalidRequest("the file is empty: it needs a header row naming columns")
        digest = self.content_sha256
        if idempotency_key:
            existing = self.conn.execute(
                select(import_jobs.c.id, import_jobs.c.content_sha256).where(
                    import_jobs.c.user_id == self.user_id,
                    import_jobs.c.idempotency_key == idempotency_key,
                )
            ).first()
            if existing is not None:
                if existing.content_sha256 != digest:
                    raise IdempotencyConflict("this Idempotency-Key was used for a different file")
                return existing.id, False
        self.conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == self.job_id)
            .values(
                table_id=table.id,
                table_name=table.name,
                status="queued",
                options=options,
                idempotency_key=idempotency_key,
                content_sha256=digest,
                size_bytes=self.size,
            )
        )
        return self.job_id, True
