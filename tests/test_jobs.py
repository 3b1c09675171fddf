"""Broker and mail switches: in-process StubBroker worker, Redis with a real `dramatiq` worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from dms.tables import outbox
from tests.conftest import SmtpSink, wait_for
from tests.netutil import free_port
from tests.test_imports_api import mail_text


def _sent(app, outbox_id):
    with app.extensions["dms"].db.engine.connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.id == outbox_id)).one()


def _queue_test_mail(app, recipient):
    result = app.test_cli_runner().invoke(args=["mail", "send-test", "--to", recipient])
    assert result.exit_code == 0, result.output
    return int(result.output.split()[-1])


def test_without_mail_server_mail_goes_to_var_mail_through_the_inprocess_worker(make_app):
    app = make_app(DMS_INPROCESS_WORKER=True)
    outbox_id = _queue_test_mail(app, "someone@example.com")
    maildir = Path(app.config["DMS_VAR_DIR"]) / "mail"

    def mine():
        return [f for f in maildir.glob("*.eml") if "someone@example.com" in mail_text(f)]

    files = wait_for(mine)
    assert len(files) == 1
    assert mail_text(files[0]).startswith("DMS test message\n")
    assert wait_for(lambda: _sent(app, outbox_id).sent_at)


def test_mail_server_down_then_up_delivers_exactly_once(make_app):
    port = free_port()
    app = make_app(DMS_INPROCESS_WORKER=True, MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    outbox_id = _queue_test_mail(app, "later@example.com")
    wait_for(lambda: _sent(app, outbox_id).attempts >= 1)
    assert _sent(app, outbox_id).sent_at is None
    sink = SmtpSink(port).start()
    try:
        wait_for(lambda: _sent(app, outbox_id).sent_at, timeout=30)
        # (a sink may also get other tests' swept leftovers: count this message only)
        assert [m["To"] for m in sink.messages].count("later@example.com") == 1
    finally:
        sink.stop()


@pytest.mark.redis
def test_redis_broker_and_a_real_worker_process_deliver_over_smtp(
    make_app, redis_url, start_worker, smtp
):
    start_worker(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port))
    app = make_app(DMS_BROKER_URL=redis_url)
    assert app.test_client().get("/readyz").status_code == 200
    outbox_id = _queue_test_mail(app, "ops@example.com")
    mine = wait_for(lambda: [m for m in smtp.messages if m["To"] == "ops@example.com"], timeout=60)
    assert mine[0]["Subject"] == "DMS test message"
    assert wait_for(lambda: _sent(app, outbox_id).sent_at)
    assert [m["To"] for m in smtp.messages].count("ops@example.com") == 1


@pytest.mark.redis
def test_readyz_answers_503_when_the_broker_is_unreachable(make_app):
    app = make_app(DMS_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "broker" in response.get_json()["message"]


def test_a_long_smtp_outage_does_not_multiply_send_attempts(make_app):
    port = free_port()
    app = make_app(
        DMS_INPROCESS_WORKER=True,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port,
        DMS_SWEEP_INTERVAL_SECONDS=0.5,
        DMS_JOB_STALE_SECONDS=0.5,
    )
    outbox_id = _queue_test_mail(app, "patient@example.com")
    import time

    time.sleep(6)
    # One retry chain backing off (1 s, 2 s, 4 s…), not a new chain every sweep.
    assert 1 <= _sent(app, outbox_id).attempts <= 5
    sink = SmtpSink(port).start()
    try:
        wait_for(lambda: _sent(app, outbox_id).sent_at, timeout=60)
        assert [m["To"] for m in sink.messages].count("patient@example.com") == 1
    finally:
        sink.stop()
