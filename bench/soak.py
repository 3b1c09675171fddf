"""Mixed-load soak: `python -m bench.soak --seconds N`.

Under gunicorn (2 workers, gthread) with two `dramatiq dms.jobs` worker processes on Redis, for
N seconds at once: K CSV imports of R rows into their own tables, readers paging with cursors,
writers creating/updating/deleting records in their own tables (every acknowledged write is
logged), and schema changes (add/rename/remove column, create/drop index) on other tables.
Then every table's row count must equal the prediction (imports: the job's rows_imported, and
the file's good rows; writer tables: acknowledged creates - deletes, replayed from the log;
schema tables: their seed rows), and no answer may be a 5xx. Prints request counts and read
latency; exits 1 on any violation. Loopback only; bounded by N plus the import drain timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import psycopg
import redis
from psycopg import sql
from tests.csvfiles import BENCH_FIELDS, make_csv

from bench.common import (
    ROOT,
    SECRET,
    fresh_database,
    gunicorn,
    multipart_file,
    percentile,
    plain,
    token,
)

REDIS_URL = os.environ.get("DMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
ENDED = {"succeeded", "completed_with_errors", "failed", "cancelled"}
WRITER_FIELDS = {
    "title": "text not null",
    "n": "integer",
    "amount": "numeric(10,2)",
    "code": "varchar(40) unique",
    "tag": "varchar(20) index",
}
DDL_FIELDS = {"label": "text", "qty": "integer"}
DDL_SEED_ROWS = 300


class Run:
    """Everything the threads share: the server, the stop flag, counters and violations."""

    def __init__(self, base: str, auth: str, log_path: Path) -> None:
        self.base, self.auth = base, auth
        self.netloc = urlparse(base).netloc
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.read_ms: list[float] = []
        self.read_rows = 0
        self.events: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.log_path = log_path
        self.log = log_path.open("a", buffering=1)

    def event(self, name: str, n: int = 1) -> None:
        """Count something that happened."""
        with self.lock:
            self.events[name] += n

    def violation(self, message: str) -> None:
        """Record a broken promise (printed at the end, repeats counted; the run exits 1)."""
        with self.lock:
            self.violations[message] += 1

    def count(self, kind: str, status: int) -> None:
        """Count one answer (the summary turns every 5xx into a violation)."""
        with self.lock:
            self.statuses[(kind, status)] += 1

    def ack(self, table: str, op: str, ids: list[int]) -> None:
        """Log an acknowledged (2xx) write: the log alone predicts each table's row count."""
        line = json.dumps({"t": round(time.time(), 3), "table": table, "op": op, "ids": ids})
        with self.lock:
            self.log.write(line + "\n")
            self.events[f"acknowledged {op}"] += 1

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, Any, float]:
        """Send one JSON request (a fresh connection unless one is given); count its status."""
        own = conn is None
        connection = conn or http.client.HTTPConnection(self.netloc, timeout=120)
        headers = {"Authorization": f"Bearer {self.auth}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = path + ("?" + urlencode(query) if query else "")
        started = time.perf_counter()
        try:
            connection.request(method, url, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            if own:
                connection.close()
        elapsed = time.perf_counter() - started
        self.count(kind, response.status)
        ctype = response.getheader("Content-Type") or ""
        if response.status >= 400 and not ctype.startswith("application/json"):
            self.violation(f"{kind} {response.status} is not JSON: {raw[:120]!r}")
        answer = json.loads(raw) if ctype.startswith("application/json") else raw
        return response.status, answer, elapsed


def reader(run: Run, tables: list[tuple[str, list[str]]], seed: int) -> None:
    """Page through tables with cursors; every page 200, no id twice in one pass."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(run.netloc, timeout=120)
    while not run.stop.is_set():
        table, sorts = rng.choice(tables)
        query = {"table_name": table, "limit": str(rng.choice([50, 200, 500])), "count": "exact"}
        query["sort_by"] = rng.choice(sorts)
        seen: set[int] = set()
        for _page in range(40):
            try:
                status, body, seconds = run.call(
                    "read", "GET", "/crud/read_records/", None, query, conn
                )
            except (OSError, http.client.HTTPException):
                conn.close()  # an idle keep-alive connection closed by the server: reads retry
                conn = http.client.HTTPConnection(run.netloc, timeout=120)
                continue
            if status != 200:
                run.violation(f"read {table} answered {status} {_code(body)}")
                break
            ids = [record["id"] for record in body["records"]]
            with run.lock:
                run.read_ms.append(seconds * 1000)
                run.read_rows += len(ids)
            if seen.intersection(ids) or len(set(ids)) != len(ids):
                run.violation(f"read {table} sort {query['sort_by']}: a cursor showed an id twice")
            seen.update(ids)
            if not body["next_cursor"] or run.stop.is_set():
                break
            query = {**query, "cursor": body["next_cursor"], "count": "none"}
        run.event("read passes")
    conn.close()


def _code(body: Any) -> str:
    """Return an error body's code and message without the request id (so repeats group)."""
    if isinstance(body, dict):
        return f"{body.get('code')}: {str(body.get('message')).split(' (request id')[0][:120]}"
    return repr(body)[:120]


def writer(run: Run, table: str, seed: int) -> None:
    """Create, bulk-create, update and delete on our own table; log every acknowledged write."""
    rng = random.Random(seed)
    live: dict[int, str] = {}  # id -> its unique code, for every row we know exists
    serial = 0

    def row() -> dict[str, Any]:
        nonlocal serial
        serial += 1
        n, code, tag = rng.randrange(10**6), f"{table}-{serial}", rng.choice("abcdef")
        return {"title": f"t{serial}", "n": n, "amount": f"{serial}.25", "code": code, "tag": tag}

    while not run.stop.is_set():
        roll, body = rng.random(), {"table_name": table}
        target = rng.choice(list(live)) if live else 0
        if roll < 0.35 or not live:
            op, method, path, body["data"] = "create", "POST", "/crud/create_record/", row()
        elif roll < 0.5:
            op, method, path = "create", "POST", "/crud/create_records/"
            body["records"] = [row() for _ in range(rng.randint(2, 25))]
        elif roll < 0.72:
            op, method, path = "update", "PUT", "/crud/update_record/"
            body.update(id=target, data={"n": rng.randrange(10**6)})
        elif roll < 0.92:
            op, method, path, body["id"] = "delete", "DELETE", "/crud/delete_record/", target
        else:
            # Refused writes must store nothing: a bad type (400) or a taken unique code (409).
            bad = {"n": "not a number"} if roll < 0.96 else {"code": live[target]}
            op, method, path = "refused", "POST", "/crud/create_record/"
            body["data"] = {**row(), **bad}
        try:
            status, answer, _ = run.call("write", method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            # The outcome of this write is unknown: the prediction can no longer be trusted.
            run.violation(f"{op} in {table} got no answer: {exc!r}")
            continue
        if op == "refused":
            if status in (400, 409):
                run.event("refused writes")
                continue
            run.violation(f"a write that should fail in {table} answered {status}")
        if status not in (200, 201):
            run.violation(f"{op} ({path}) in {table} answered {status} {_code(answer)}")
            continue
        if op == "delete":
            del live[target]
        records = answer.get("records", [answer]) if method == "POST" else [{"id": target}]
        live.update((r["id"], r["code"]) for r in records if "code" in r)
        run.ack(table, "create" if op == "refused" else op, [r["id"] for r in records])


def schema_changer(run: Run, table: str, seed: int) -> None:
    """Cycle add -> rename -> index -> drop index -> remove column; 409 (busy) is a retry."""
    rng = random.Random(seed)
    cycle = 0
    step = 0
    while not run.stop.is_set():
        column, renamed = f"c{cycle}", f"r{cycle}"
        steps = [
            ("/schemas/add_column/", {"column_name": column, "column_type": "integer default 7"}),
            ("/schemas/rename_column/", {"column_name": column, "new_name": renamed}),
            ("/schemas/create_index/", {"columns": [renamed, "qty"]}),
            ("/schemas/drop_index/", {"columns": [renamed, "qty"]}),
            ("/schemas/remove_column/", {"column_name": renamed}),
        ]
        path, body = steps[step]
        try:
            status, answer, _ = run.call("schema", "POST", path, {"table_name": table, **body})
        except (OSError, http.client.HTTPException) as exc:
            run.violation(f"schema change {path} on {table} got no answer: {exc!r}")
            return  # its outcome is unknown: this cycle cannot go on
        if status == 200:
            run.event("schema changes")
            step += 1
            if step == len(steps):
                step, cycle = 0, cycle + 1
        elif status == 409:
            run.event("schema changes busy (409)")
        else:
            run.violation(f"schema change {path} on {table} answered {status} {_code(answer)}")
            return
        time.sleep(rng.uniform(0.0, 0.05))


def importer(run: Run, table: str, path: Path, result: dict[str, Any]) -> None:
    """Upload one CSV (streamed), then follow its job until it ends."""
    body, length, content_type = multipart_file(path, {"table_name": table})

    started = time.perf_counter()
    conn = http.client.HTTPConnection(run.netloc, timeout=600)
    try:
        conn.request(
            "POST",
            "/import/upload/",
            body=body,
            headers={
                "Authorization": f"Bearer {run.auth}",
                "Idempotency-Key": f"soak-{table}",
                "Content-Type": content_type,
                "Content-Length": str(length),
            },
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
    except (OSError, http.client.HTTPException) as exc:
        run.violation(f"upload into {table} got no answer: {exc!r}")
        return
    finally:
        conn.close()
    run.count("upload", response.status)
    if response.status != 202:
        run.violation(f"upload into {table} answered {response.status}: {answer}")
        return
    result["job_id"] = answer["job_id"]
    while True:
        status, job, _ = run.call("job", "GET", f"/import/jobs/{answer['job_id']}/")
        if status == 200 and job["status"] in ENDED:
            result.update(job=job, seconds=time.perf_counter() - started)
            return
        if status != 200:
            run.violation(f"job of {table} answered {status}: {job}")
            return
        if result.get("give_up"):
            return
        time.sleep(0.25)


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


def worker_errors(log: str) -> list[str]:
    """Return the exception line of every traceback in a worker's log."""
    errors = []
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in chunk.splitlines() if line and not line[0].isspace()]
        errors.append(lines[0][:200] if lines else "a traceback")
    return errors


def api(run: Run, path: str, body: dict[str, Any], expect: int) -> Any:
    """Make a setup request that must succeed."""
    status, answer, _ = run.call("setup", "POST", path, body)
    if status != expect:
        raise RuntimeError(f"setup {path} answered {status}: {answer}")
    return answer


def predicted_writes(log_path: Path) -> dict[str, set[int]]:
    """Replay the write log: each table's ids that must exist (created, not deleted)."""
    live: dict[str, set[int]] = {}
    with log_path.open() as handle:
        for line in handle:
            entry = json.loads(line)
            ids = live.setdefault(entry["table"], set())
            if entry["op"] == "create":
                ids.update(entry["ids"])
            elif entry["op"] == "delete":
                ids.difference_update(entry["ids"])
    return live


def stored_ids(url: str, table: str) -> set[int]:
    """Return the ids really in the bench user's `table` (straight from PostgreSQL)."""
    with psycopg.connect(plain(url)) as conn:
        owner = conn.execute("SELECT id FROM dms_users WHERE username = 'bench'").fetchone()
        assert owner is not None
        query = sql.SQL("SELECT id FROM {}.{}").format(
            sql.Identifier(f"dms_user_{owner[0]}"), sql.Identifier(table)
        )
        return {row[0] for row in conn.execute(query)}


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
            "GUNICORN_CMD_ARGS": f"-k gthread --threads {args.web_threads}",
        }
        with (
            dramatiq_workers(2, env, folder) as worker_logs,
            gunicorn(url, workers=2, extra_env=web_env) as base,
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


def check_tables(
    run: Run,
    url: str,
    files: list[tuple[str, Path, int, int]],
    results: list[dict[str, Any]],
    writer_tables: list[str],
    ddl_tables: list[str],
) -> list[str]:
    """Compare every table with its prediction; return one line per table."""
    lines = []
    for (table, _path, good, bad), result in zip(files, results, strict=True):
        job = result.get("job")
        if job is None:
            run.violation(f"import into {table} did not end in time ({result.get('job_id')})")
            continue
        count = len(stored_ids(url, table))
        ok = job["status"] in ("succeeded", "completed_with_errors") and (
            count == job["rows_imported"] == good and job["rows_rejected"] == bad
        )
        lines.append(
            f"  {table:<6} {job['status']:<21} rows_imported {job['rows_imported']:>9,} "
            f"(file: {good:,} good, {bad:,} bad) stored {count:>9,} "
            f"in {result['seconds']:6.1f} s  {'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            run.violation(f"import {table}: job {job} stored {count}, file {good} good/{bad} bad")
    run.log.flush()
    predicted = predicted_writes(run.log_path)
    for table in writer_tables:
        want, have = predicted.get(table, set()), stored_ids(url, table)
        ok = want == have
        lines.append(
            f"  {table:<6} predicted {len(want):>6,} rows (creates - deletes acknowledged) "
            f"stored {len(have):>6,}  {'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            run.violation(
                f"{table}: {len(want - have)} acknowledged rows missing, "
                f"{len(have - want)} unacknowledged rows present"
            )
    for table in ddl_tables:
        have = len(stored_ids(url, table))
        ok = have == DDL_SEED_ROWS
        lines.append(
            f"  {table:<6} predicted {DDL_SEED_ROWS:>6,} rows (seeded, schema changes only) "
            f"stored {have:>6,}  {'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            run.violation(f"{table}: {have} rows after schema changes, {DDL_SEED_ROWS} seeded")
    return lines


def print_summary(run: Run, args: argparse.Namespace, seconds: float, lines: list[str]) -> None:
    """Print what ran, what it answered, the read latency, the tables and the violations."""
    by_class: Counter[str] = Counter()
    for (_kind, status), n in run.statuses.items():
        by_class[f"{status // 100}xx"] += n
    kinds = sorted({kind for kind, _ in run.statuses})
    print(
        f"soak: {seconds:.0f} s of mixed load; gunicorn 2 workers x {args.web_threads} threads, "
        f"2 dramatiq workers; {args.imports} imports x {args.rows:,} rows, {args.readers} "
        f"readers, {args.writers} writers, {args.schema_changers} schema changers"
    )
    classes = ", ".join(f"{name} {n:,}" for name, n in sorted(by_class.items()))
    print(f"requests: {sum(run.statuses.values()):,} ({classes})")
    for kind in kinds:
        counts = sorted((status, n) for (k, status), n in run.statuses.items() if k == kind)
        print(f"  {kind:<7} " + " ".join(f"{status}x{n:,}" for status, n in counts))
    if run.read_ms:
        print(
            f"reads: {len(run.read_ms):,} pages, {run.read_rows:,} rows, "
            f"p50 {percentile(run.read_ms, 0.50):.1f} ms, "
            f"p99 {percentile(run.read_ms, 0.99):.1f} ms, max {max(run.read_ms):.1f} ms"
        )
    print("events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.events.items())))
    print("tables:")
    for line in lines:
        print(line)
    print(f"violations: {sum(run.violations.values())}")
    for violation, n in run.violations.most_common():
        print(f"  - {violation}" + (f" (x{n})" if n > 1 else ""))


if __name__ == "__main__":
    sys.exit(main())
