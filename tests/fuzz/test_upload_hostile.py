"""Hostile multipart uploads: what schemathesis cannot generate (broken framing, mutated bytes).

The fuzzer sends well-formed multipart bodies built from the documented form; these tests break
the framing itself and mutate a valid upload byte by byte. Every answer must be a documented
status with the SPEC error shape, never a 5xx, and a refused upload stores nothing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dms.api.errors import STATUS_BY_CODE
from dms.tables import import_jobs, upload_chunks
from tests.conftest import auth_for
from tests.test_imports_api import multipart

EXAMPLES = int(os.environ.get("DMS_FUZZ_EXAMPLES", "25"))
B = "hostile0boundary"
VALID = multipart({"table_name": "people"}, b"name,qty\nann,1\nbob,2\n", boundary=B)


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    """Return one multipart part (no closing boundary)."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{B}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


END = f"--{B}--\r\n".encode()
CSV = b"name,qty\nann,1\n"
T = part("table_name", b"people")
F = part("file", CSV, "f.csv")


def framed(*parts: bytes) -> bytes:
    """Return the parts followed by the closing boundary."""
    return b"".join(parts) + END


HOSTILE: dict[str, tuple[bytes, str | None]] = {
    "no boundary parameter": (VALID, "multipart/form-data"),
    "boundary of 201 chars": (VALID, "multipart/form-data; boundary=" + "b" * 201),
    "json content type": (b'{"table_name": "people"}', "application/json"),
    "no content type": (VALID, ""),
    "wrong boundary": (VALID, "multipart/form-data; boundary=other"),
    "empty body": (b"", None),
    "preamble only": (b"just some text", None),
    "ends early": (VALID[: len(VALID) // 2], None),
    "no closing boundary": (T + F, None),
    "closing boundary only": (END, None),
    "no file": (framed(T), None),
    "no table_name": (framed(F), None),
    "two files": (framed(T, F, F), None),
    "file under another name": (framed(T, part("doc", CSV, "f.csv")), None),
    "unknown field": (framed(part("tablename", b"people"), F), None),
    "field of 5000 bytes": (framed(part("table_name", b"p" * 5000), F), None),
    "field not UTF-8": (framed(part("table_name", b"\xff\xfe"), F), None),
    "field with NUL": (framed(part("table_name", b"peo\x00ple"), F), None),
    "table of SQL": (framed(part("table_name", b"people; drop"), F), None),
    "file of NUL bytes": (framed(T, part("file", b"\x00" * 64, "f")), None),
    "UTF-16 file": (framed(T, part("file", "name\nx\n".encode("utf-16"), "f")), None),
    "binary file": (framed(T, part("file", bytes(range(256)) * 4, "f")), None),
    "header of 2 MiB": (framed(T, part("file", b"n" * (2 << 20), "f")), None),
    "file part without a name": (
        framed(
            T,
            f'--{B}\r\nContent-Disposition: form-data; filename="f.csv"\r\n\r\n'.encode()
            + CSV
            + b"\r\n",
        ),
        None,
    ),
    "part without headers": (f"--{B}\r\n\r\nvalue\r\n".encode() + END, None),
    "unterminated part headers": (f"--{B}\r\nContent-Disposition: form-data; name=".encode(), None),
    "bad encoding option": (framed(T, part("encoding", b"utf-32"), F), None),
    "bad delimiter option": (framed(T, part("delimiter", b"\x00"), F), None),
    "bad on_error option": (framed(T, part("on_error", b"explode"), F), None),
    "owner of another user": (framed(T, part("owner", b"admin"), F), None),
}


@pytest.fixture
def upload_app(make_app: Any) -> Flask:
    """Return an app whose upload limit is small enough to test (1 MiB) and no import cap."""
    return make_app(DMS_MAX_UPLOAD_BYTES=1 << 20, DMS_MAX_ACTIVE_IMPORTS=10**6)


@pytest.fixture
def upload_client(upload_app: Flask, make_user: Any) -> tuple[FlaskClient, dict[str, str]]:
    """Return a client and the headers of a user owning `people(name text, qty int)`."""
    client = upload_app.test_client()
    auth = auth_for(client, make_user().username)
    created = client.post(
        "/schemas/create_table/",
        json={"table_name": "people", "fields": {"name": "text", "qty": "int"}},
        headers=auth,
    )
    assert created.status_code == 201, created.get_json()
    return client, auth


def documented(client: FlaskClient) -> set[int]:
    """Return the statuses /openapi.json documents for the upload."""
    responses = client.get("/openapi.json").get_json()["paths"]["/import/upload/"]["post"]
    return {int(status) for status in responses["responses"]}


def stored(app: Flask) -> tuple[int, int]:
    """Return how many jobs and upload chunks exist."""
    with app.extensions["dms"].db.engine.connect() as conn:
        jobs = conn.execute(select(func.count()).select_from(import_jobs)).scalar_one()
        chunks = conn.execute(select(func.count()).select_from(upload_chunks)).scalar_one()
    return jobs, chunks


def assert_answer(response: Any, allowed: set[int]) -> None:
    """Assert a documented status, never a 5xx, and the SPEC error shape for every error."""
    status = response.status_code
    assert status < 500, response.get_data()[:300]
    assert status in allowed, f"undocumented {status}: {response.get_data()[:300]!r}"
    if status >= 400:
        assert response.mimetype == "application/json", response.mimetype
        body = response.get_json()
        assert set(body) <= {"status", "code", "message", "errors"}, body
        assert body["status"] == status and STATUS_BY_CODE.get(body["code"]) == status, body
        assert isinstance(body["message"], str) and body["message"], body


def send(client: FlaskClient, auth: dict[str, str], body: bytes, ctype: str | None) -> Any:
    """POST `body` to the upload with `ctype` (the test boundary by default)."""
    content_type = f"multipart/form-data; boundary={B}" if ctype is None else ctype
    headers = {**auth, "Content-Type": content_type} if content_type else auth
    return client.post("/import/upload/", data=body, headers=headers)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_is_refused_cleanly_and_stores_nothing(upload_app, upload_client, case):
    client, auth = upload_client
    body, content_type = HOSTILE[case]
    before = stored(upload_app)
    response = send(client, auth, body, content_type)
    assert_answer(response, documented(client))
    assert 400 <= response.status_code < 500, f"{case} was accepted: {response.get_json()}"
    assert stored(upload_app) == before


def test_a_path_in_the_filename_is_ignored(upload_app, upload_client):
    client, auth = upload_client
    body = framed(T, part("file", CSV, "../../etc/passwd"))
    response = send(client, auth, body, None)
    assert_answer(response, documented(client))
    assert response.status_code == 202, response.get_json()


def test_too_many_active_imports_answer_a_documented_status(make_app, make_user):
    app = make_app(DMS_MAX_ACTIVE_IMPORTS=1)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    fields = {"name": "text"}
    client.post(
        "/schemas/create_table/", json={"table_name": "people", "fields": fields}, headers=auth
    )
    first = send(client, auth, multipart({"table_name": "people"}, b"name\na\n", B), None)
    assert first.status_code == 202, first.get_json()
    second = send(client, auth, multipart({"table_name": "people"}, b"name\nb\n", B), None)
    assert second.status_code == 429 and second.headers.get("Retry-After")
    assert_answer(second, documented(client))


@pytest.mark.parametrize("key", ["k" * 256, "tab\there", "\x7f", "nul\x00"])
def test_bad_idempotency_keys_answer_400(upload_app, upload_client, key):
    client, auth = upload_client
    before = stored(upload_app)
    response = send(client, {**auth, "Idempotency-Key": key}, VALID, None)
    assert_answer(response, documented(client))
    assert response.status_code == 400 and stored(upload_app) == before


_AT = st.integers(0, len(VALID) - 1)
_FRAGMENTS = [
    f"--{B}\r\n".encode(),
    f"\r\n--{B}--\r\n".encode(),
    b"\r\n\r\n",
    b'"; filename="',
    b'Content-Disposition: form-data; name="file"\r\n',
    b"\x00",
    b"\xff\xfe",
]
_MUTATION = st.one_of(
    st.tuples(st.just("truncate"), _AT, st.just(b"")),
    st.tuples(st.just("insert"), _AT, st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("replace"), _AT, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), _AT, st.sampled_from(_FRAGMENTS)),
)


def mutate(body: bytes, mutation: tuple[str, int, bytes]) -> bytes:
    """Return `body` truncated at, or with bytes inserted or replaced at, a position."""
    kind, at, data = mutation
    if kind == "truncate":
        return body[:at]
    if kind == "insert":
        return body[:at] + data + body[at:]
    return body[:at] + data + body[at + len(data) :]


def test_mutated_multipart_bodies_never_answer_5xx(upload_app, upload_client):
    client, auth = upload_client
    allowed = documented(client)

    @settings(
        max_examples=EXAMPLES * 4,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(mutations=st.lists(_MUTATION, min_size=1, max_size=3))
    def run(mutations: list[tuple[str, int, bytes]]) -> None:
        body = VALID
        for mutation in mutations:
            body = mutate(body, mutation)
        before = stored(upload_app)
        response = send(client, auth, body, None)
        assert_answer(response, allowed)
        if response.status_code >= 400:
            assert stored(upload_app) == before

    run()
