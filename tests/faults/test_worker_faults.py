"""Workers paused (SIGSTOP) past the stale limit or killed (SIGKILL) in the middle of an import."""

from __future__ import annotations

import signal
import time

import pytest

from dms.engine.import_sweep import JOB_LOCK_CLASS
from tests.conftest import wait_for
from tests.csvfiles import make_csv
from tests.faults.conftest import FAULT_ENV

pytestmark = pytest.mark.faults

STALE = float(FAULT_ENV["DMS_JOB_STALE_SECONDS"])


def test_a_worker_paused_past_the_stale_limit_imports_once_when_resumed(rig, measure):
    rig.make_table()
    data, bad_lines, good = make_csv(200_000, bad_every=100)
    paused = rig.worker().wait_ready()
    job_id = rig.upload(data)
    rig.wait_running(job_id, min_rows=20_000)
    paused.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        at_pause = rig.job(job_id)
        rig.worker().wait_ready()  # its sweeper sees the heartbeat go stale
        # Paused well past the stale limit, with the other worker sweeping every second.
        time.sleep(max(0.0, STALE + 3 - (time.monotonic() - stopped)))
        during = rig.job(job_id)
        # The paused session still holds the job's advisory lock: nobody re-queued the job,
        # nobody started a second attempt, no batch was committed by anyone else.
        assert (during.status, during.attempts) == ("running", 1), during
        assert during.checkpoint_offset == at_pause.checkpoint_offset
        heartbeat_age = (during.heartbeat_at - at_pause.heartbeat_at).total_seconds()
        assert heartbeat_age == 0
    finally:
        paused.signal(signal.SIGCONT)
    resumed = time.monotonic()
    job = rig.assert_imported_once(job_id, "people", good, len(bad_lines))
    assert job.attempts == 1
    assert "sweep re-queued jobs" not in rig.workers[1].text()
    measure(
        f"worker SIGSTOPped {resumed - stopped:.1f} s (stale limit {STALE:.0f} s) at line "
        f"{at_pause.checkpoint_line + 1:,} of a 200k-row import while a second worker swept: "
        f"not re-queued, 1 attempt, {good:,} rows imported once after SIGCONT, 1 mail"
    )


def test_a_worker_killed_mid_import_is_finished_by_a_new_worker(rig, measure):
    rig.make_table()
    data, bad_lines, good = make_csv(200_000, bad_every=100)
    first = rig.worker().wait_ready()
    job_id = rig.upload(data)
    rig.wait_running(job_id, min_rows=30_000)
    first.kill()
    killed = time.monotonic()
    committed = rig.job(job_id)
    assert committed.status == "running" and committed.rows_processed < 200_000
    rig.worker()
    wait_for(lambda: rig.job(job_id).attempts >= 2, timeout=30)
    resumed = time.monotonic()
    job = rig.assert_imported_once(job_id, "people", good, len(bad_lines))
    assert job.attempts == 2
    measure(
        f"worker SIGKILLed at line {committed.checkpoint_line + 1:,} of a 200k-row import: "
        f"a new worker resumed from there {resumed - killed:.1f} s later (stale limit "
        f"{STALE:.0f} s), {good:,} rows imported once, {len(bad_lines):,} rejected, 1 mail"
    )


_ZOMBIE_ROLE = (
    "DO $$ BEGIN CREATE ROLE zombie LOGIN SUPERUSER;"
    " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
)
# A statement-level trigger (statement level: it must not hold the job's row lock) that parks
# any UPDATE of dms_import_jobs made by the role `zombie` while fault_gate has a row.
_STALL = """
CREATE TABLE fault_gate (opened boolean);
CREATE FUNCTION fault_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WHILE session_user = 'zombie' AND EXISTS (SELECT 1 FROM fault_gate) LOOP
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN NULL;
END $$;
CREATE TRIGGER fault_stall BEFORE UPDATE ON dms_import_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION fault_stall();
"""
_JOB_LOCK_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s"
    " AND objid = hashtext(%s)::oid AND objsubid = 2"
)
_STALLED_PROGRESS = (
    "SELECT pid FROM pg_stat_activity WHERE usename = 'zombie' AND state = 'active'"
    " AND query LIKE 'UPDATE dms_import_jobs SET%%checkpoint_offset%%'"
)


def test_a_paused_worker_that_lost_its_session_does_not_revive_a_finished_job(rig, measure):
    # on_error=abort: a frozen worker's main session dies (idle_in_transaction_session_timeout,
    # a DBA, a proxy), another worker re-runs the job to its end, then the frozen one thaws.
    fields = {"name": "text", "email": "email", "qty": "integer"}  # no unique: doubles show
    response = rig.client.post(
        "/schemas/create_table/", headers=rig.auth, json={"table_name": "people", "fields": fields}
    )
    assert response.status_code == 201, response.get_json()
    rows = 200_000
    data = "\n".join(
        ["name,email,qty", *(f"n{i},user{i}@example.com,{i % 1000}" for i in range(rows))]
    )
    rig.psql(_ZOMBIE_ROLE)
    rig.psql(_STALL)
    zombie_url = rig.database_url.replace("postgres@", "zombie@", 1)
    frozen = rig.worker(DMS_DATABASE_URL=zombie_url).wait_ready()
    job_id = rig.upload_with((data + "\n").encode(), on_error="abort")
    rig.wait_running(job_id, min_rows=10_000)
    rig.psql("INSERT INTO fault_gate VALUES (true)")
    # The worker has loaded a batch in its long transaction and now records progress on a
    # side connection: freeze it right there, then lose its main session.
    stalled = wait_for(lambda: rig.psql(_STALLED_PROGRESS), timeout=10, interval=0.01)
    frozen.signal(signal.SIGSTOP)
    holder = rig.psql(_JOB_LOCK_HOLDER, (JOB_LOCK_CLASS, job_id))
    assert holder and holder[0][0] != stalled[0][0]
    rig.psql("SELECT pg_terminate_backend(%s)", (holder[0][0],))
    try:
        rig.worker().wait_ready()  # sweeps: no heartbeat, no lock -> re-queued, re-run
        finished = rig.wait_job(job_id, timeout=60)
        assert finished["status"] == "succeeded" and finished["rows_imported"] == rows
        assert rig.rows("people") == (rows, rows)
    finally:
        rig.psql("DELETE FROM fault_gate")
        frozen.signal(signal.SIGCONT)
    thawed = time.monotonic()
    # Give the thawed worker time to write its stale progress, fail, retry, and the sweeps.
    time.sleep(STALE + 4)
    job = rig.job(job_id)
    outcome = (job.status, job.rows_imported, job.attempts, rig.rows("people"))
    measure(
        f"abort-mode job re-run to its end by worker B while worker A was frozen after losing "
        f"its session; {time.monotonic() - thawed:.0f} s after A thawed: status {job.status}, "
        f"attempts {job.attempts}, table rows/distinct {rig.rows('people')} (expected {rows})"
    )
    assert outcome == ("succeeded", rows, 2, (rows, rows))
    assert len(rig.mails(job_id)) == 1
