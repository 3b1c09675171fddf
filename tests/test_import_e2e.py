"""Imports end to end: real Redis, real `dramatiq` worker processes, aiosmtpd, faults."""

from __future__ import annotations

import csv
import io
import signal
import time

import pytest
from sqlalchemy import func, select, text

from dms.tables import import_jobs, outbox
from tests.conftest import auth_for, wait_for
from tests.csvfiles import make_csv
from tests.test_imports_api import make_table, upload, wait_job

pytestmark = pytest.mark.redis


@pytest.fixture
def api(make_app, redis_url, make_user):
    app = make_app(DMS_BROKER_URL=redis_url)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    make_table(client, auth)
    return app, client, auth


def _table_rows(app, auth):
    return (
        app.test_client()
        .get("/crud/read_records/?table_name=people&limit=1", headers=auth)
        .get_json()["count"]
    )


def _distinct_emails(app, auth):
    svc = app.extensions["dms"]
    import jwt

    uid = int(jwt.decode(auth["Authorization"][7:], options={"verify_signature": False})["sub"])
    with svc.db.engine.connect() as conn:
        table = svc.catalog.lookup(conn, uid, "people").table
        total = conn.execute(select(func.count()).select_from(table)).scalar_one()
        distinct = conn.execute(select(func.count(table.c.email.distinct()))).scalar_one()
    return total, distinct


def _delivered(smtp, job_id):
    """Return the messages the SMTP server received about `job_id` (other tests' may arrive)."""
    return [m for m in smtp.messages if job_id in _body(m)]


def _one_mail(app, smtp, job_id, settle=1.0):
    """Wait for the job's mail and its outbox row marked sent; return it if no second came.

    A duplicate would be a second send of the one outbox row: once the row is marked sent
    none may start, and one already under way lands within `settle` seconds.
    """
    wait_for(lambda: _delivered(smtp, job_id), timeout=60)
    wait_for(lambda: _mails_for(app, job_id)[0].sent_at is not None, timeout=30)
    time.sleep(settle)  # waiting for something that must not happen
    delivered = _delivered(smtp, job_id)
    assert len(delivered) == 1, [m["Subject"] for m in delivered]
    assert len(_mails_for(app, job_id)) == 1
    return delivered[0]


def _body(message):
    """Return a received message's decoded body (it may be quoted-printable)."""
    return message.get_payload(decode=True).decode("utf-8", "replace")


def _mails_for(app, job_id):
    with app.extensions["dms"].db.engine.connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.job_id == job_id)).all()


def test_100k_rows_with_1_percent_bad_rows_of_every_kind(api, start_worker, smtp):
    app, client, auth = api
    start_worker(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port))
    data, bad_lines, good = make_csv(100_000, bad_every=100)
    response = upload(client, auth, data)
    assert response.status_code == 202
    job = wait_job(client, auth, response.get_json()["job_id"], timeout=180)
    assert job["status"] == "completed_with_errors", job
    assert (job["rows_imported"], job["rows_rejected"], job["rows_processed"]) == (
        good,
        len(bad_lines),
        100_000,
    )
    assert _table_rows(app, auth) == good
    report = client.get(f"/import/jobs/{job['id']}/errors/", headers=auth).get_data(as_text=True)
    lines = {int(r["line"]) for r in csv.DictReader(io.StringIO(report))}
    assert lines == bad_lines
    message = _one_mail(app, smtp, job["id"])
    assert "people" in message["Subject"] and message["To"].endswith("@example.com")
    assert f"/import/jobs/{job['id']}/errors/" in _body(message)


def test_on_error_abort_stores_nothing(api, start_worker, smtp):
    app, client, auth = api
    start_worker(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port))
    data, bad_lines, _ = make_csv(5000, bad_every=1000)
    job_id = upload(client, auth, data, on_error="abort").get_json()["job_id"]
    job = wait_job(client, auth, job_id, timeout=120)
    assert job["status"] == "failed" and job["rows_imported"] == 0
    assert job["rows_rejected"] == len(bad_lines)
    assert _table_rows(app, auth) == 0


def test_reimporting_the_same_file_rejects_every_row_as_duplicate(api, start_worker):
    app, client, auth = api
    start_worker()
    data, _, good = make_csv(3000, bad_every=0)
    first = wait_job(client, auth, upload(client, auth, data).get_json()["job_id"])
    assert first["status"] == "succeeded" and first["rows_imported"] == 3000
    second = wait_job(client, auth, upload(client, auth, data).get_json()["job_id"])
    assert second["status"] == "completed_with_errors"
    assert (second["rows_imported"], second["rows_rejected"]) == (0, 3000)
    assert _table_rows(app, auth) == 3000
    report = client.get(f"/import/jobs/{second['id']}/errors/", headers=auth).get_data(as_text=True)
    assert "duplicate" in report.lower()


def test_a_worker_killed_mid_import_resumes_without_loss_or_duplicates(api, start_worker, smtp):
    app, client, auth = api
    env = {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp.port),
        "DMS_JOB_STALE_SECONDS": "3",
        "DMS_SWEEP_INTERVAL_SECONDS": "1",
        "DMS_IMPORT_BATCH_ROWS": "5000",
    }
    first = start_worker(**env)
    data, bad_lines, good = make_csv(300_000, bad_every=100)
    job_id = upload(client, auth, data).get_json()["job_id"]

    def progressed():
        body = client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()
        return body["status"] == "running" and body["rows_processed"] > 0

    wait_for(progressed, timeout=120, interval=0.01)
    first.kill()
    mid = client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()
    assert mid["status"] == "running" and mid["rows_processed"] < 300_000
    start_worker(**env)
    job = wait_job(client, auth, job_id, timeout=240)
    assert job["status"] == "completed_with_errors"
    assert (job["rows_imported"], job["rows_rejected"]) == (good, len(bad_lines))
    assert _distinct_emails(app, auth) == (good, good)
    _one_mail(app, smtp, job_id)


def test_the_same_message_delivered_twice_imports_once(api, start_worker):
    app, client, auth = api
    data, _, good = make_csv(20_000, bad_every=0)
    job_id = upload(client, auth, data).get_json()["job_id"]
    app.extensions["dms"].enqueue("run_import", job_id)  # a second delivery of the same job
    start_worker()
    job = wait_job(client, auth, job_id, timeout=120)
    assert job["status"] == "succeeded" and job["rows_imported"] == good
    assert _distinct_emails(app, auth) == (good, good)
    with app.extensions["dms"].db.engine.connect() as conn:
        attempts = conn.execute(
            select(import_jobs.c.attempts).where(import_jobs.c.id == job_id)
        ).scalar_one()
    assert attempts == 1
    assert len(_mails_for(app, job_id)) == 1


def test_smtp_down_then_up_sends_one_mail_without_repeating_the_import(api, start_worker):
    from tests.conftest import SmtpSink
    from tests.netutil import free_port as _free_port

    app, client, auth = api
    port = _free_port()
    start_worker(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(port))
    data, _, good = make_csv(2000, bad_every=0)
    job_id = upload(client, auth, data).get_json()["job_id"]
    job = wait_job(client, auth, job_id, timeout=60)
    assert job["status"] == "succeeded"
    wait_for(lambda: _mails_for(app, job_id) and _mails_for(app, job_id)[0].attempts >= 1)
    sink = SmtpSink(port).start()
    try:
        _one_mail(app, sink, job_id)
    finally:
        sink.stop()
    with app.extensions["dms"].db.engine.connect() as conn:
        attempts = conn.execute(
            text("SELECT attempts FROM dms_import_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()
    assert attempts == 1 and _table_rows(app, auth) == good


def test_a_paused_worker_resumed_imports_once(api, start_worker, smtp):
    app, client, auth = api
    env = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp.port), "DMS_IMPORT_BATCH_ROWS": "5000"}
    worker = start_worker(**env)
    data, _, good = make_csv(100_000, bad_every=0)
    job_id = upload(client, auth, data).get_json()["job_id"]
    wait_for(
        lambda: (
            client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()["rows_processed"] > 0
        ),
        timeout=120,
        interval=0.01,
    )
    worker.signal(signal.SIGSTOP)
    try:
        # A second worker whose sweep finds the job silent past the stale limit: the frozen
        # worker still holds the job's lock, so it must be left alone, not run again.
        start_worker(**env, DMS_JOB_STALE_SECONDS="1", DMS_SWEEP_INTERVAL_SECONDS="0.5")
        # Waiting for something that must not happen: its boot (a few seconds) and many sweeps.
        time.sleep(8)
    finally:
        worker.signal(signal.SIGCONT)
    job = wait_job(client, auth, job_id, timeout=180)
    assert job["status"] == "succeeded" and job["rows_imported"] == good
    with app.extensions["dms"].db.engine.connect() as conn:
        attempts = conn.execute(
            text("SELECT attempts FROM dms_import_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()
    assert attempts == 1  # the second worker never took it over
    assert _distinct_emails(app, auth) == (good, good)
    _one_mail(app, smtp, job_id)
