"""Import benchmark: a full DMS import (HTTP upload until the job ends, gunicorn + Redis +
`dramatiq dms.jobs` worker) against PostgreSQL's own COPY of the same valid rows into an
identical fresh table. Prints both times, the ratio and the peak RSS of web and worker.

BENCH_IMPORT_ROWS (default 100000,1000000) sets the sizes, BENCH_REPEAT (default 2) how many
times DMS and COPY run, alternating; the best of each is compared.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import redis
from tests.csvfiles import BENCH_FIELDS, HEADER, good_row, make_csv

from bench.common import ROOT, SECRET, fresh_database, gunicorn, multipart_file, plain, token
from bench.rss import TreePeak, descendants, peak_rss_mib

SIZES = [int(n) for n in os.environ.get("BENCH_IMPORT_ROWS", "100000,1000000").split(",")]
REPEAT = int(os.environ.get("BENCH_REPEAT", "2"))
POLL_S = 0.1
REDIS_URL = os.environ.get("DMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
COPY_DDL = (
    "CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, "
    "email text UNIQUE, qty integer, price numeric(10,2), active boolean, born date, "
    "seen timestamp)"
)


def write_files(rows: int, folder: Path) -> tuple[Path, Path, int, int]:
    """Write the DMS file (1% bad rows) and the valid-rows-only file for COPY."""
    data, bad_lines, good = make_csv(rows, bad_every=100)
    dms_file = folder / f"dms-{rows}.csv"
    dms_file.write_bytes(data)
    valid = folder / f"valid-{rows}.csv"
    with valid.open("w") as out:
        out.write(HEADER + "\n")
        for i in range(rows):
            if i % 100 != 99:
                out.write(good_row(i) + "\n")
    return dms_file, valid, good, len(bad_lines)


def copy_seconds(url: str, valid: Path) -> float:
    """Time PostgreSQL's COPY of the valid rows into a fresh identical table."""
    table = f"copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain(url)) as conn:
        conn.execute(COPY_DDL.format(t=table))
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY {table} (name, email, qty, price, active, born, seen) "
                "FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy,
            valid.open("rb") as handle,
        ):
            for block in iter(lambda: handle.read(1 << 20), b""):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    return elapsed


def dms_seconds(base: str, auth: str, path: Path, table: str) -> tuple[float, dict]:
    """Time one file from the start of its upload until its job ended, through HTTP and a worker.

    The end is the job's own `finished_at` (this machine's clock, as the start is): status is
    polled only every POLL_S, because polling every few milliseconds to see the end sooner
    took CPU from the import itself.
    """
    headers = {"Authorization": f"Bearer {auth}"}
    conn = http.client.HTTPConnection(urlparse(base).netloc, timeout=600)
    conn.request(
        "POST",
        "/schemas/create_table/",
        json.dumps({"table_name": table, "fields": BENCH_FIELDS}).encode(),
        {**headers, "Content-Type": "application/json"},
    )
    conn.getresponse().read()
    body, length, content_type = multipart_file(path, {"table_name": table})
    started = time.time()
    conn.request(
        "POST",
        "/import/upload/",
        body=body,
        headers={
            **headers,
            "Content-Type": content_type,
            "Content-Length": str(length),
        },
    )
    response = conn.getresponse()
    job = json.loads(response.read())
    assert response.status == 202, job
    stored = time.time()
    while True:
        time.sleep(POLL_S)
        conn.request("GET", f"/import/jobs/{job['job_id']}/", headers=headers)
        status = json.loads(conn.getresponse().read())
        if status["status"] not in ("queued", "running"):
            begun = datetime.fromisoformat(status["started_at"]).timestamp()
            ended = datetime.fromisoformat(status["finished_at"]).timestamp()
            # Where the time went: storing the upload, waiting for a worker, the run itself.
            status["split"] = (stored - started, begun - stored, ended - begun)
            return ended - started, status


def main() -> None:
    """Run the import benchmark for each size, DMS and COPY alternating REPEAT times."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in SIZES:
            dms_file, valid, good, bad = write_files(rows, Path(tmp))
            with fresh_database("dms_bench_import") as url, worker_process(url) as worker:
                with gunicorn(url, workers=2, extra_env={"DMS_BROKER_URL": REDIS_URL}) as base:
                    web_pid = int(
                        subprocess.run(
                            ["pgrep", "-f", f"gunicorn.*{urlparse(base).port}"],
                            capture_output=True,
                            text=True,
                        ).stdout.split()[0]
                    )
                    auth = token(base)
                    time.sleep(2)  # let the worker boot before the clock starts
                    runs = []
                    with TreePeak(worker.pid) as worker_peak:
                        for attempt in range(REPEAT):
                            seconds, status = dms_seconds(base, auth, dms_file, f"people_{attempt}")
                            imported = (status["rows_imported"], status["rows_rejected"])
                            assert imported == (good, bad), status
                            runs.append((seconds, copy_seconds(url, valid), status["split"]))
                    web_rss = peak_rss_mib(descendants(web_pid))
                    worker_rss = worker_peak.peak_mib
            report(rows, runs, worker_rss, web_rss)
    print(
        "\n(DMS: from the start of the HTTP upload until the job's finished_at, 1% bad rows "
        "rejected and reported; "
        "COPY: the valid rows only, into an identical fresh table. Runs alternate, and the best"
        "\nof each is compared: this machine's speed drifts by tens of percent between minutes.)"
    )


@contextmanager
def worker_process(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run one `dramatiq dms.jobs` worker (one process, one thread) on `url` and Redis."""
    env = {**os.environ, "DMS_DATABASE_URL": url, "DMS_SECRET_KEY": SECRET}
    env["DMS_BROKER_URL"] = REDIS_URL
    dramatiq = str(Path(sys.executable).parent / "dramatiq")
    worker = subprocess.Popen(
        [dramatiq, "dms.jobs", "--processes", "1", "--threads", "1"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield worker
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)


def report(
    rows: int, runs: list[tuple[float, float, Any]], worker_rss: float, web_rss: float
) -> None:
    """Print one size's best DMS and COPY times, their ratio, every run and the peak RSS."""
    best_dms = min(runs, key=lambda run: run[0])
    best_copy = min(copy for _, copy, _ in runs)
    upload, wait, run = best_dms[2]
    every = ", ".join(f"{dms:.2f}/{copy:.2f}" for dms, copy, _ in runs)
    print(
        f"{rows:>9,} rows: DMS {best_dms[0]:6.2f}s  COPY {best_copy:6.2f}s  "
        f"ratio {best_dms[0] / best_copy:4.2f}x  worker peak RSS {worker_rss:5.0f} MB  "
        f"web peak RSS {web_rss:5.0f} MB\n"
        f"{'':17}(best DMS run: upload stored {upload:.2f}s, waiting for a worker {wait:.2f}s, "
        f"run {run:.2f}s; all runs DMS/COPY s: {every})",
        flush=True,
    )


if __name__ == "__main__":
    main()
