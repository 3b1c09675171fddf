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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import redis
from tests.csvfiles import BENCH_FIELDS, HEADER, good_row, make_csv

from bench.common import ROOT, SECRET, fresh_database, gunicorn, multipart_file, plain, token

SIZES = [int(n) for n in os.environ.get("BENCH_IMPORT_ROWS", "100000,1000000").split(",")]
REPEAT = int(os.environ.get("BENCH_REPEAT", "2"))
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


def dms_seconds(
    base: str, auth: str, path: Path, table: str, sample: Callable[[], None] = lambda: None
) -> tuple[float, dict]:
    """Time upload-until-ended of one file through the HTTP API and a worker.

    `sample` runs at every status poll: the worker's reader child lives only as long as the
    job, so its peak memory has to be read while it runs.
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
    started = time.perf_counter()
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
    uploaded = time.perf_counter() - started
    while True:
        conn.request("GET", f"/import/jobs/{job['job_id']}/", headers=headers)
        status = json.loads(conn.getresponse().read())
        sample()
        if status["status"] not in ("queued", "running"):
            total = time.perf_counter() - started
            # Where the time went: storing the upload, waiting for a worker, the run itself.
            begun = datetime.fromisoformat(status["started_at"]).timestamp()
            ended = datetime.fromisoformat(status["finished_at"]).timestamp()
            status["split"] = (uploaded, begun - stored, ended - begun)
            return total, status
        time.sleep(0.02)


def peak_rss_mb(pids: list[int]) -> float:
    """Return the largest VmHWM (peak resident set) among `pids`, in MB."""
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            continue
    return peak / 1024


class PeakSampler:
    """The largest peak RSS seen among a process's descendants, over repeated calls."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0

    def __call__(self) -> None:
        """Read the descendants' peaks now (the worker processes, its reader's children)."""
        self.peak = max(self.peak, peak_rss_mb(children(self.pid)[1:]))


def children(pid: int) -> list[int]:
    """Return `pid` and all its descendants."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout.split()
    return [pid, *(c for child in out for c in children(int(child)))]


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
                    sampler = PeakSampler(worker.pid)
                    runs = []
                    for attempt in range(REPEAT):
                        seconds, status = dms_seconds(
                            base, auth, dms_file, f"people_{attempt}", sampler
                        )
                        imported = (status["rows_imported"], status["rows_rejected"])
                        assert imported == (good, bad), status
                        runs.append((seconds, copy_seconds(url, valid), status["split"]))
                    web_rss = peak_rss_mb(children(web_pid)[1:])
                    worker_rss = max(sampler.peak, peak_rss_mb(children(worker.pid)[1:]))
            report(rows, runs, worker_rss, web_rss)
    print(
        "\n(DMS: HTTP upload until the job has ended, 1% bad rows rejected and reported; "
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
        f"run {run:.2f}s, the rest polling; all runs DMS/COPY s: {every})",
        flush=True,
    )


if __name__ == "__main__":
    main()
