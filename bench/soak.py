"""Mixed-load soak: `python -m bench.soak --seconds N`.

Under gunicorn (2 workers, gthread) with two `dramatiq dms.jobs` worker processes on Redis, for
N seconds at once: K CSV imports of R rows into their own tables, readers paging with cursors,
writers creating/updating/deleting records in their own tables (every acknowledged write is
logged), and schema changes (add/rename/remove column, create/drop index) on other tables.
Then every table's row count must equal the prediction (imports: the job's rows_imported, and
the file's good rows; writer tables: acknowledged creates - deletes, replayed from the log;
schema tables: their seed rows), and no answer may be a 5xx. Prints request counts and read
latency; exits 1 on any violation. Loopback only; bounded by N plus the import drain timeout.

The load lives in bench/soak_load.py, the checks and the summary in bench/soak_checks.py; this
module parses the options, starts the server and the workers, and runs the load then the checks.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from tests.csvfiles import BENCH_FIELDS, make_csv

from bench.common import ROOT, SECRET, fresh_database, gunicorn, token
from bench.soak_checks import check_tables, print_summary, worker_errors
from bench.soak_load import (
    DDL_FIELDS,
    DDL_SEED_ROWS,
    WRITER_FIELDS,
    Run,
    api,
    importer,
    reader,
    schema_changer,
    writer,
)

REDIS_URL = os.environ.get("DMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Return the command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60, help="mixed-load duration")
    parser.add_argument("--imports", type=int, default=4, help="CSV imports, one table each")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per CSV (1%% bad)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=4, help="writer threads, one table each")
    parser.add_argument("--schema-changers", type=int, default=2, help="one table each")
    parser.add_argument("--web-threads", type=int, default=8, help="gthread threads per worker")
    parser.add_argument("--drain-timeout", type=float, default=600, help="wait for imports")
    parser.add_argument("--log", type=Path, help="write log (JSON lines; default: a temp file)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; return 0 when every promise held, else 1."""
    args = parse_args(argv)
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="dms-soak-") as tmp, fresh_database("dms_soak") as url:
        folder = Path(tmp)
        log_path = args.log or folder / "writes.jsonl"
        log_path.write_text("")
        files = []
        for i in range(args.imports):
            data, bad_lines, good = make_csv(args.rows, bad_every=100, seed=i)
            path = folder / f"imp_{i}.csv"
            path.write_bytes(data)
            files.append((f"imp_{i}", path, good, len(bad_lines)))
        env = {
            **os.environ,
            "DMS_DATABASE_URL": url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_BROKER_URL": REDIS_URL,
            "DMS_VAR_DIR": str(folder / "var"),
            "DMS_ACCESS_TOKEN_MINUTES": "1440",
        }
        web_env = {
            "DMS_BROKER_URL": REDIS_URL,
            "DMS_VAR_DIR": str(folder / "var"),
            "DMS_ACCESS_TOKEN_MINUTES": "1440",
            "DMS_MAX_ACTIVE_IMPORTS": str(max(5, args.imports)),
        }
        with (
            dramatiq_workers(2, env, folder) as worker_logs,
            gunicorn(url, workers=2, extra_env=web_env, threads=args.web_threads) as base,
        ):
            run = Run(base, token(base), log_path)
            return soak(run, args, url, files, worker_logs)


def soak(
    run: Run,
    args: argparse.Namespace,
    url: str,
    files: list[tuple[str, Path, int, int]],
    worker_logs: list[Path],
) -> int:
    """Set the tables up, run the mixed load, check every table; print the summary."""
    writer_tables = [f"w_{i}" for i in range(args.writers)]
    ddl_tables = [f"d_{i}" for i in range(args.schema_changers)]
    for table, *_ in files:
        api(run, "/schemas/create_table/", {"table_name": table, "fields": BENCH_FIELDS}, 201)
    for table in writer_tables:
        api(run, "/schemas/create_table/", {"table_name": table, "fields": WRITER_FIELDS}, 201)
    for table in ddl_tables:
        api(run, "/schemas/create_table/", {"table_name": table, "fields": DDL_FIELDS}, 201)
        records = [{"label": f"seed {n}", "qty": n} for n in range(DDL_SEED_ROWS)]
        api(run, "/crud/create_records/", {"table_name": table, "records": records}, 201)
    readable = [(t, ["id", "-id", "qty,id"]) for t, *_ in files]
    # Writers change `n`: a keyset page sorted by a column being updated may legitimately show
    # a moved row again, so readers sort by what writers never change.
    readable += [(t, ["id", "-id", "tag", "-tag,code"]) for t in writer_tables]
    readable += [(t, ["id", "-id"]) for t in ddl_tables]

    results: list[dict[str, Any]] = [{} for _ in files]
    imports = [
        threading.Thread(target=importer, args=(run, t, p, results[i]), daemon=True)
        for i, (t, p, *_) in enumerate(files)
    ]
    load = [
        threading.Thread(target=reader, args=(run, readable, i), daemon=True)
        for i in range(args.readers)
    ]
    load += [
        threading.Thread(target=writer, args=(run, t, 100 + i), daemon=True)
        for i, t in enumerate(writer_tables)
    ]
    load += [
        threading.Thread(target=schema_changer, args=(run, t, 200 + i), daemon=True)
        for i, t in enumerate(ddl_tables)
    ]
    started = time.monotonic()
    for thread in imports + load:
        thread.start()
    run.stop.wait(args.seconds)
    run.stop.set()
    for thread in load:
        thread.join(timeout=180)
        if thread.is_alive():
            run.violation(f"{thread.name} did not stop within 180 s")
    load_seconds = time.monotonic() - started
    deadline = time.monotonic() + args.drain_timeout
    for thread, result in zip(imports, results, strict=True):
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            result["give_up"] = True
    for path in worker_logs:
        for error in worker_errors(path.read_text(errors="replace")):
            run.violation(f"worker {path.stem} logged {error}")

    for (kind, status), n in sorted(run.statuses.items()):
        if status >= 500:
            run.violation(f"{n} {kind} requests answered {status}")
    lines = check_tables(run, url, files, results, writer_tables, ddl_tables)
    print_summary(run, args, load_seconds, lines)
    return 1 if run.violations else 0


@contextmanager
def dramatiq_workers(count: int, env: dict[str, str], logs: Path) -> Iterator[list[Path]]:
    """Run `count` `dramatiq dms.jobs` processes (2 threads each); stop them on exit."""
    command = [str(Path(sys.executable).parent / "dramatiq"), "dms.jobs", "--processes", "1"]
    procs, paths = [], [logs / f"worker{i}.log" for i in range(count)]
    for path in paths:
        with path.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*command, "--threads", "2"],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        yield paths
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
