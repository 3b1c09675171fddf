"""PostgreSQL restarted under an import and under reads: 503 meanwhile, then recovery."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.conftest import wait_for
from tests.csvfiles import make_csv

pytestmark = pytest.mark.faults

DOWN_SECONDS = 2.0
UNAVAILABLE = {"status", "code", "message"}


def _assert_unavailable(status: int, body: Any) -> None:
    assert status == 503, body
    assert set(body) == UNAVAILABLE and body["code"] == "unavailable", body
    assert body["status"] == 503 and body["message"], body


def test_postgres_restart_mid_import_resumes_from_the_checkpoint(rig, measure):
    rig.make_table()
    data, bad_lines, good = make_csv(200_000, bad_every=100)
    rig.worker().wait_ready()
    job_id = rig.upload(data)
    rig.wait_running(job_id, min_rows=30_000)
    reads = (f"/import/jobs/{job_id}/", "/crud/read_records/?table_name=people&limit=5")

    stopped = time.monotonic()
    rig.pg.stop("fast")
    answers = []
    while time.monotonic() - stopped < DOWN_SECONDS:
        for path in reads:
            response = rig.client.get(path, headers=rig.auth)
            answers.append((response.status_code, response.get_json()))
        time.sleep(0.05)
    rig.pg.start()
    restarted = time.monotonic()
    resume = rig.job(job_id)  # the last committed checkpoint, which the next attempt reads

    def api_back() -> bool:
        responses = [rig.client.get(path, headers=rig.auth) for path in reads]
        for response in responses:
            if response.status_code != 200:
                _assert_unavailable(response.status_code, response.get_json())
        return all(r.status_code == 200 for r in responses)

    wait_for(api_back, timeout=15, interval=0.05)
    back = time.monotonic()
    wait_for(lambda: rig.job(job_id).attempts >= 2, timeout=30)
    resumed = time.monotonic()

    assert answers and all(status == 503 for status, _ in answers)
    for status, body in answers:
        _assert_unavailable(status, body)
    job = rig.assert_imported_once(job_id, "people", good, len(bad_lines))
    assert 0 < resume.checkpoint_line < 200_001
    measure(
        f"PostgreSQL down {restarted - stopped:.1f} s during a 200k-row import: "
        f"API 503 ({len(answers)} reads) for {back - stopped:.1f} s, back "
        f"{back - restarted:.1f} s after the start; job resumed {resumed - restarted:.1f} s "
        f"after the start from line {resume.checkpoint_line + 1:,} (attempt {job.attempts}); "
        f"{good:,} rows imported once, {len(bad_lines):,} rejected, 1 mail"
    )


def _fill(rig, rows: int) -> None:
    """Insert `rows` rows into people straight from generate_series."""
    with rig.engine.begin() as conn:
        table = rig.svc.catalog.lookup(conn, rig.user_id, "people").table
        i = func.generate_series(1, rows).table_valued("i").render_derived()
        conn.execute(
            insert(table).from_select(
                ["name", "email", "qty"],
                select(
                    func.concat("name ", i.c.i),
                    func.concat("user", i.c.i, "@example.com"),
                    i.c.i % 1000,
                ),
            )
        )


def test_reads_during_a_postgres_restart_answer_200_or_503_never_500(rig, measure):
    rig.make_table()
    _fill(rig, 100_000)
    query = {"table_name": "people", "search": "name 12", "sort_by": "-qty", "limit": "20"}
    seen: list[tuple[float, Any, Any]] = []
    done = threading.Event()

    def read_loop() -> None:
        client = rig.app.test_client()
        while not done.is_set():
            try:
                response = client.get("/crud/read_records/", query_string=query, headers=rig.auth)
                seen.append((time.monotonic(), response.status_code, response.get_json()))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                seen.append((time.monotonic(), repr(exc), None))

    threads = [threading.Thread(target=read_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(seen) >= 10)
        stopped = time.monotonic()
        rig.pg.stop("fast")
        time.sleep(DOWN_SECONDS)
        rig.pg.start()
        restarted = time.monotonic()
        wait_for(lambda: sum(t > restarted and s == 200 for t, s, _ in seen) >= 30, timeout=20)
    finally:
        done.set()
        for thread in threads:
            thread.join()

    statuses = {status for _, status, _ in seen}
    assert statuses <= {200, 503}, [(s, b) for _, s, b in seen if s not in (200, 503)][:5]
    failed = [(t, body) for t, status, body in seen if status == 503]
    assert failed, "no read hit the outage"
    for _, body in failed:
        _assert_unavailable(503, body)
    last_503 = max(t for t, _ in failed)
    assert last_503 < restarted + 5
    assert sum(t > last_503 and s == 200 for t, s, _ in seen) >= 10
    ok = [(t, b) for t, s, b in seen if s == 200]
    assert all(b["count"] == ok[0][1]["count"] for _, b in ok)
    measure(
        f"PostgreSQL down {restarted - stopped:.1f} s under 3 reader threads: "
        f"{len(seen)} reads, {len(ok)} x 200, {len(failed)} x 503, 0 x 500; 503s from "
        f"{min(t for t, _ in failed) - stopped:+.2f} s to {last_503 - stopped:+.2f} s "
        f"after the stop request (restarted at {restarted - stopped:+.2f} s)"
    )
