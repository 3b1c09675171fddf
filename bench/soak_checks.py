"""The soak's checks: replay the write log, read what PostgreSQL really stored, compare every
table with its prediction, pick tracebacks out of worker logs and print the summary.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import percentile, plain
from bench.soak_load import DDL_SEED_ROWS, Run


def worker_errors(log: str) -> list[str]:
    """Return the exception line of every traceback in a worker's log."""
    errors = []
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in chunk.splitlines() if line and not line[0].isspace()]
        errors.append(lines[0][:200] if lines else "a traceback")
    return errors


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
