"""SMTP refusing connections, then accepting: one mail, and the import is not repeated."""

from __future__ import annotations

import time

import pytest

from tests.conftest import SmtpSink, wait_for
from tests.csvfiles import make_csv
from tests.netutil import free_port

pytestmark = pytest.mark.faults


def test_smtp_refusing_then_accepting_delivers_one_mail_without_reimporting(rig, measure):
    rig.make_table()
    data, bad_lines, good = make_csv(20_000, bad_every=100)
    port = free_port()  # nothing listens there yet: connections are refused
    rig.worker(mail_port=port).wait_ready()
    job_id = rig.upload(data)
    job = rig.wait_job(job_id)
    assert job["status"] == "completed_with_errors" and job["rows_imported"] == good
    ended = time.monotonic()
    wait_for(lambda: rig.mails(job_id) and rig.mails(job_id)[0].attempts >= 3, timeout=30)
    refused = rig.mails(job_id)[0].attempts
    assert rig.mails(job_id)[0].sent_at is None
    sink = SmtpSink(port).start()
    up = time.monotonic()
    try:
        wait_for(lambda: rig.mails(job_id)[0].sent_at, timeout=60)
        sent = time.monotonic()
        time.sleep(1.5)  # a few more sweeps and retries: nothing is sent again
        mine = [
            m
            for m in sink.messages
            if job_id in m.get_payload(decode=True).decode("utf-8", "replace")
        ]
        assert len(mine) == 1
    finally:
        sink.stop()
    assert len(rig.mails(job_id)) == 1
    row = rig.job(job_id)
    assert row.attempts == 1 and row.rows_imported == good
    assert rig.rows("people") == (good, good)
    failures = rig.mails(job_id)[0].attempts
    measure(
        f"SMTP refused for {up - ended:.1f} s ({refused} failed attempts by then, "
        f"{failures} in all): mail delivered {sent - up:.1f} s after SMTP came up, once; "
        f"import not repeated (attempts 1, {good:,} rows)"
    )
