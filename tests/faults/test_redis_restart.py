"""Redis killed and restarted empty: lost messages are re-sent by the sweep, jobs end once."""

from __future__ import annotations

import time

import pytest
import redis

from tests.csvfiles import make_csv
from tests.test_imports_api import multipart

pytestmark = pytest.mark.faults

QUEUE_KEY = "dramatiq:dms"  # dramatiq's Redis list of messages no worker has fetched yet


def test_redis_restart_with_jobs_queued_and_one_running_ends_every_job_once(rig, measure):
    tables = ["first", "second", "third", "fourth", "fifth"]
    for table in tables:
        rig.make_table(table)
    big, big_bad, big_good = make_csv(150_000, bad_every=100)
    small, small_bad, small_good = make_csv(20_000, bad_every=100, seed=11)
    # One thread: one job runs, the worker prefetches two messages, the rest wait in Redis.
    rig.worker(threads=1).wait_ready()
    running = rig.upload(big, tables[0])
    rig.wait_running(running)
    queued = [rig.upload(small, table) for table in tables[1:]]
    assert all(rig.api_job(job_id)["status"] == "queued" for job_id in queued)
    broker = redis.Redis.from_url(rig.redis.url)
    waiting = broker.llen(QUEUE_KEY)
    broker.close()
    assert waiting, "every message was already fetched: nothing would be lost"

    rig.redis.kill()
    killed = time.monotonic()
    time.sleep(0.5)
    rig.redis.start()

    first = rig.assert_imported_once(running, tables[0], big_good, len(big_bad), settle=0)
    for job_id, table in zip(queued, tables[1:], strict=True):
        rig.assert_imported_once(job_id, table, small_good, len(small_bad), settle=0)
    ended = time.monotonic()
    time.sleep(1.5)  # a few more sweeps: still one mail per job
    for job_id in [running, *queued]:
        assert len(rig.mails(job_id)) == 1 and len(rig.delivered(job_id)) == 1
    attempts = [rig.job(job_id).attempts for job_id in queued]
    assert first.attempts == 1 and attempts == [1] * len(queued)
    requeued = rig.workers[0].text().count("sweep re-queued")
    measure(
        f"Redis killed (0.5 s, restarted empty) with 1 job running and {len(queued)} queued "
        f"({waiting} messages still in Redis, lost): all {len(queued) + 1} jobs ended "
        f"{ended - killed:.1f} s after the kill, each imported once (attempts 1), "
        f"1 mail each; {requeued} sweeps re-queued jobs or mail"
    )


def test_an_upload_while_redis_is_down_is_kept_and_imported_once_redis_is_back(rig, measure):
    # The database, not the broker, holds the job: the upload is stored and answered 202 (a
    # 5xx would invite a retry without Idempotency-Key, a second job for the same file), and
    # the sweep sends the message that could not be sent.
    rig.make_table()
    data, bad_lines, good = make_csv(20_000, bad_every=100)
    rig.worker().wait_ready()
    rig.redis.kill()
    try:
        response = rig.client.post(
            "/import/upload/",
            data=multipart({"table_name": "people"}, data),
            headers=rig.auth,
            content_type="multipart/form-data; boundary=dmsboundary7",
        )
    finally:
        rig.redis.start()
    back = time.monotonic()
    body = response.get_json()
    assert response.status_code == 202, body
    jobs = rig.client.get("/import/jobs/", headers=rig.auth).get_json()["jobs"]
    assert [job["id"] for job in jobs] == [body["job_id"]]
    rig.assert_imported_once(body["job_id"], "people", good, len(bad_lines))
    measure(
        f"upload while Redis was down: {response.status_code} {body}; 1 job, imported once "
        f"{time.monotonic() - back:.1f} s after Redis was back"
    )
