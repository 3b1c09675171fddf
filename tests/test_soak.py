"""The mixed-load soak (bench/soak.py) in its short form: gunicorn, two workers, Redis, 20 s."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
def test_mixed_load_keeps_every_row_count_and_never_answers_5xx(server_url, redis_url):
    env = {
        **os.environ,
        "DMS_BENCH_DATABASE_URL": server_url,
        "DMS_BENCH_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "bench.soak", "--seconds", "20", "--imports", "2"]
    done = subprocess.run(
        [*command, "--rows", "20000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = done.stdout[done.stdout.find("soak:") :] if "soak:" in done.stdout else ""
    code = done.returncode
    assert code == 0, (summary or done.stderr[-4000:]) + server_errors(done.stdout + done.stderr)
    assert "violations: 0" in summary, summary
    assert summary.count(" ok") == 2 + 4 + 2, summary  # 2 imports, 4 writers, 2 schema tables


def server_errors(output: str) -> str:
    """Return the distinct exceptions the server logged (what a 5xx was), for the report."""
    seen = []
    for line in output.splitlines():
        if line.startswith(("psycopg.errors.", "sqlalchemy.exc.", "TypeError", "ValueError")):
            if line not in seen:
                seen.append(line[:300])
    return "\nserver exceptions:\n" + "\n".join(seen[:10]) if seen else ""


def test_reads_and_writes_racing_column_renames_never_answer_5xx(app, auth):
    """The soak's finding in miniature: a column renamed between lookup and query."""
    client = app.test_client()
    fields = {"a": "integer", "b": "text"}
    response = client.post(
        "/schemas/create_table/", json={"table_name": "race", "fields": fields}, headers=auth
    )
    assert response.status_code == 201, response.get_json()
    rows = [{"a": n, "b": f"row {n}"} for n in range(50)]
    client.post("/crud/create_records/", json={"table_name": "race", "records": rows}, headers=auth)
    stop, lock = threading.Event(), threading.Lock()
    statuses: Counter[tuple[str, int]] = Counter()

    def renamer() -> None:
        own, names = app.test_client(), ("a", "z")
        for turn in range(200):
            if stop.is_set():
                break
            old, new = names[turn % 2], names[1 - turn % 2]
            body = {"table_name": "race", "column_name": old, "new_name": new}
            own.post("/schemas/rename_column/", json=body, headers=auth)
        stop.set()

    def user(kind: str) -> None:
        own = app.test_client()
        while not stop.is_set():
            if kind == "read":
                query = {"table_name": "race"}
                answer = own.get("/crud/read_records/", query_string=query, headers=auth)
            else:
                body = {"table_name": "race", "data": {"b": "new"}}
                answer = own.post("/crud/create_record/", json=body, headers=auth)
            with lock:
                statuses[(kind, answer.status_code)] += 1

    threads = [threading.Thread(target=renamer)]
    threads += [threading.Thread(target=user, args=(k,)) for k in ("read", "read", "write")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors = {key: n for key, n in statuses.items() if key[1] >= 500}
    assert not errors, f"5xx while a column was renamed: {errors} of {dict(statuses)}"
