"""Import over HTTP: upload checks, idempotency, job endpoints, the in-process worker, mail."""

from __future__ import annotations

import csv
import email
import email.policy
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dms.tables import import_jobs, upload_chunks
from tests.conftest import auth_for, wait_for
from tests.csvfiles import BENCH_FIELDS, make_csv

ENDED = {"succeeded", "completed_with_errors", "failed", "cancelled"}


def multipart(fields: dict[str, str], data: bytes, boundary: str = "dmsboundary7") -> bytes:
    """Return a multipart/form-data body with `fields` then the file part."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts)


def upload(client, auth, data: bytes, table="people", key=None, **fields):
    headers = dict(auth)
    if key:
        headers["Idempotency-Key"] = key
    body = multipart({"table_name": table, **fields}, data)
    return client.post(
        "/import/upload/",
        data=body,
        headers=headers,
        content_type="multipart/form-data; boundary=dmsboundary7",
    )


def mail_text(path: Path) -> str:
    """Return a .eml file's headers and decoded body (bodies may be quoted-printable)."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return f"{message['Subject']}\n{message['To']}\n{message.get_content()}"


def make_table(client, auth, name="people", fields=None):
    response = client.post(
        "/schemas/create_table/",
        headers=auth,
        json={"table_name": name, "fields": fields or BENCH_FIELDS},
    )
    assert response.status_code == 201, response.get_json()


def counts(app):
    with app.extensions["dms"].db.engine.connect() as conn:
        jobs = conn.execute(select(func.count()).select_from(import_jobs)).scalar_one()
        chunks = conn.execute(select(func.count()).select_from(upload_chunks)).scalar_one()
    return jobs, chunks


def wait_job(client, auth, job_id, timeout=60):
    def ended():
        body = client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()
        return body if body["status"] in ENDED else None

    return wait_for(ended, timeout=timeout)


@pytest.fixture
def worker_app(make_app):
    return make_app(DMS_INPROCESS_WORKER=True, DMS_SWEEP_INTERVAL_SECONDS=3600)


@pytest.fixture
def wclient(worker_app):
    return worker_app.test_client()


@pytest.fixture
def wauth(wclient, make_user):
    return auth_for(wclient, make_user().username)


@pytest.mark.parametrize(
    "data,fragment",
    [
        (b"", "empty"),
        (b"name,email,bogus\n", "'bogus' is not a column"),
        (b"name,,email\n", "blank name"),
        (b"name,NAME,email\n", "appears twice"),
        (b"email,qty\n", "missing required"),
        (b"id,name\n", "'id' is not a column"),
    ],
)
def test_bad_headers_answer_400_and_store_nothing(app, client, auth, data, fragment):
    make_table(client, auth, fields={"name": "text not null", "email": "email", "qty": "int"})
    before = counts(app)
    response = upload(client, auth, data)
    body = response.get_json()
    assert response.status_code == 400, body
    assert fragment in str(body), body
    assert counts(app) == before


def test_a_header_name_is_not_matched_through_non_ascii_case_folding(app, client, auth):
    # str.lower() turns the Kelvin sign into "k": that is not a spelling of column "kind".
    make_table(client, auth, fields={"kind": "text"})
    before = counts(app)
    response = upload(client, auth, "\u212aind\nx\n".encode())
    assert response.status_code == 400, response.get_json()
    assert "is not a column" in str(response.get_json())
    assert counts(app) == before


def test_ignore_unknown_columns_accepts_extra_headers(client, auth):
    make_table(client, auth, fields={"name": "text"})
    response = upload(client, auth, b"name,junk\nx,y\n", ignore_unknown_columns="true")
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize(
    "fields,status",
    [
        ({"on_error": "explode"}, 400),
        ({"encoding": "utf-16"}, 400),
        ({"encoding": "no-such-codec"}, 400),
        ({"delimiter": ";;"}, 400),
        ({"ignore_unknown_columns": "perhaps"}, 400),
        ({"surprise": "x"}, 400),
    ],
)
def test_bad_upload_options_answer_400(app, client, auth, fields, status):
    make_table(client, auth, fields={"name": "text"})
    before = counts(app)
    assert upload(client, auth, b"name\nx\n", **fields).status_code == status
    assert counts(app) == before


def test_upload_needs_multipart_a_file_and_a_known_table(client, auth, make_user):
    make_table(client, auth, fields={"name": "text"})
    assert (
        client.post("/import/upload/", json={"table_name": "people"}, headers=auth).status_code
        == 415
    )
    no_file = client.post(
        "/import/upload/",
        data={"table_name": "people"},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert no_file.status_code == 400 and "file" in no_file.get_json()["errors"]
    assert upload(client, auth, b"name\nx\n", table="nothere").status_code == 404
    assert upload(client, auth, b"name\nx\n", table="x;drop").status_code == 400
    other = auth_for(client, make_user().username)
    assert upload(client, other, b"name\nx\n").status_code == 404
    garbage = client.post(
        "/import/upload/",
        data=b"--zzz\r\nnot really",
        headers=auth,
        content_type="multipart/form-data; boundary=zzz",
    )
    assert garbage.status_code == 400


def test_oversized_upload_answers_413(make_app, make_user):
    app = make_app(DMS_MAX_UPLOAD_BYTES=1000)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    make_table(client, auth, fields={"name": "text"})
    before = counts(app)
    response = upload(client, auth, b"name\n" + b"x\n" * 2000)
    assert response.status_code == 413 and response.get_json()["code"] == "payload_too_large"
    assert counts(app) == before


def test_idempotency_key(app, client, auth):
    make_table(client, auth, fields={"name": "text"})
    first = upload(client, auth, b"name\na\n", key="k-1")
    assert first.status_code == 202
    again = upload(client, auth, b"name\na\n", key="k-1")
    assert again.status_code == 200 and again.get_json()["job_id"] == first.get_json()["job_id"]
    before = counts(app)
    other = upload(client, auth, b"name\nb\n", key="k-1")
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_conflict"
    assert counts(app) == before


def test_job_endpoints_are_private_and_cancel_of_an_ended_job_is_409(wclient, wauth, make_user):
    make_table(wclient, wauth, fields={"name": "text"})
    ids = [upload(wclient, wauth, f"name\n{i}\n".encode()).get_json()["job_id"] for i in range(3)]
    listed = [j["id"] for j in wclient.get("/import/jobs/", headers=wauth).get_json()["jobs"]]
    assert listed == list(reversed(ids))
    job = wait_job(wclient, wauth, ids[0])
    assert job["status"] == "succeeded" and job["rows_imported"] == 1 and job["progress"] == 1.0
    cancel = wclient.post(f"/import/jobs/{ids[0]}/cancel/", headers=wauth)
    assert cancel.status_code == 409 and cancel.get_json()["code"] == "job_ended"
    other = auth_for(wclient, make_user().username)
    for path in (f"/import/jobs/{ids[0]}/", f"/import/jobs/{ids[0]}/errors/"):
        response = wclient.get(path, headers=other)
        assert response.status_code == 404 and response.get_json()["code"] == "job_not_found"
    assert wclient.post(f"/import/jobs/{ids[0]}/cancel/", headers=other).status_code == 404
    assert wclient.get("/import/jobs/", headers=other).get_json() == {"jobs": []}
    assert wclient.get("/import/jobs/nope/", headers=wauth).status_code == 404


def test_in_process_worker_imports_reports_errors_and_mails_once(worker_app, wclient, wauth):
    make_table(wclient, wauth)
    data, bad_lines, good = make_csv(2000, bad_every=50)
    response = upload(wclient, wauth, data)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["status_url"].endswith(f"/{body['job_id']}/")
    job = wait_job(wclient, wauth, body["job_id"])
    assert job["status"] == "completed_with_errors"
    assert (job["rows_imported"], job["rows_rejected"]) == (good, len(bad_lines))
    assert job["rows_processed"] == 2000 and job["finished_at"]
    report = wclient.get(f"/import/jobs/{body['job_id']}/errors/", headers=wauth)
    assert report.status_code == 200 and report.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(report.get_data(as_text=True))))
    assert {int(r["line"]) for r in rows} == bad_lines
    page = wclient.get("/crud/read_records/?table_name=people&limit=1", headers=wauth).get_json()
    assert page["count"] == good
    maildir = Path(worker_app.config["DMS_VAR_DIR"]) / "mail"
    job_id = body["job_id"]
    mails = wait_for(lambda: [m for m in maildir.glob("*.eml") if job_id in mail_text(m)])
    assert len(mails) == 1
    text = mail_text(mails[0])
    assert "people" in text and str(good) in text


def test_ddl_during_an_import_answers_table_busy(make_app, make_user):
    app = make_app(DMS_INPROCESS_WORKER=True, DMS_IMPORT_BATCH_ROWS=2000)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    make_table(client, auth)
    data, _, _ = make_csv(300_000, bad_every=0)
    job_id = upload(client, auth, data).get_json()["job_id"]

    def running():
        body = client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()
        return body["status"] == "running" and 0 < body["rows_processed"] < 250_000

    wait_for(running, timeout=60, interval=0.01)
    response = client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": "people", "column_name": "extra", "column_type": "int"},
    )
    assert response.status_code == 409 and response.get_json()["code"] == "table_busy"
    job = wait_job(client, auth, job_id, timeout=120)
    assert job["status"] == "succeeded" and job["rows_imported"] == 300_000
    after = client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": "people", "column_name": "extra", "column_type": "int"},
    )
    assert after.status_code == 200


def test_cancel_stops_a_running_import_and_keeps_committed_rows(make_app, make_user):
    app = make_app(DMS_INPROCESS_WORKER=True, DMS_IMPORT_BATCH_ROWS=2000)
    wclient = app.test_client()
    wauth = auth_for(wclient, make_user().username)
    make_table(wclient, wauth)
    data, _, _ = make_csv(300_000, bad_every=0)
    job_id = upload(wclient, wauth, data).get_json()["job_id"]
    wait_for(
        lambda: (
            wclient.get(f"/import/jobs/{job_id}/", headers=wauth).get_json()["rows_processed"] > 0
        ),
        timeout=60,
        interval=0.01,
    )
    assert wclient.post(f"/import/jobs/{job_id}/cancel/", headers=wauth).status_code == 202
    job = wait_job(wclient, wauth, job_id)
    assert job["status"] == "cancelled"
    page = wclient.get("/crud/read_records/?table_name=people&limit=1", headers=wauth).get_json()
    assert page["count"] == job["rows_imported"] < 300_000
