"""The import engine (run_import) against PostgreSQL's own COPY of the same valid rows.

Usage: python -m bench.bench_import_engine [rows ...]   (default: 100000 1000000)
       BENCH_REPEAT=3 (runs per size, DMS and COPY alternating; the best of each is compared)

For each size: a 7-column CSV with 1% bad rows of several kinds is generated and stored as an
upload (1 MiB chunks + a queued job), imported with run_import, then the valid rows alone are
loaded with `COPY … FROM STDIN (FORMAT csv)` into a fresh identical table. The file is made and
stored a chunk at a time, so peak RSS is the engine's, not the benchmark's. The server is
DMS_BENCH_DATABASE_URL, DMS_TEST_DATABASE_URL or the embedded one (bench.common); a fresh
database is created on it and dropped at the end. SPEC §4 asks ratio <= 2.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine, func, insert, literal, select
from tests.csvfiles import BENCH_FIELDS

from bench.common import fresh_database, plain
from bench.rss import TreePeak
from dms.engine.catalog import Catalog, TableDef
from dms.engine.ddl import Schemas
from dms.engine.import_reader import warm_up
from dms.engine.importing import run_import
from dms.tables import import_jobs, upload_chunks, users

CHUNK = 1 << 20
FIELDS = BENCH_FIELDS
HEADER = ",".join(FIELDS)
# Bad kinds: each replaces one good row (row i) with a row the engine must reject.
BAD_KINDS = (
    lambda i: good_row(i).replace(f",{i % 1000},", ",12x,", 1),  # bad integer
    lambda i: good_row(i).rsplit(",", 2)[0] + ",2023-02-30,2024-01-01 10:00:00",  # bad date
    lambda i: good_row(i).replace("@", "-at-", 1),  # bad email
    lambda i: good_row(i) + ",extra",  # ragged
    lambda i: good_row(i - 50).replace(f"name {i - 50}", f"name {i}"),  # duplicate email
    lambda i: good_row(i).replace("true", "maybe").replace("false", "maybe"),  # bad boolean
    lambda i: good_row(i).replace("name", "n\udcffame"),  # invalid UTF-8 (see encode)
)


def good_row(i: int) -> str:
    """Return a valid CSV line for row `i`."""
    return (
        f"name {i},user{i}@example.com,{i % 1000},{i % 9999}.{i % 100:02d},"
        f"{'true' if i % 2 else 'false'},2020-{1 + i % 12:02d}-{1 + i % 28:02d},"
        f"2024-01-01 10:{i % 60:02d}:{i % 60:02d}"
    )


def lines(rows: int, *, valid_only: bool) -> Iterator[bytes]:
    """Return the file's lines (header first): 1% bad rows, or only the valid ones."""
    yield HEADER.encode() + b"\n"
    for i in range(rows):
        if i % 100 == 99:
            if not valid_only:
                text = BAD_KINDS[(i // 100) % len(BAD_KINDS)](i)
                yield text.encode("utf-8", "surrogateescape") + b"\n"
        else:
            yield good_row(i).encode() + b"\n"


def pieces(source: Iterator[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """Return the bytes of `source` regrouped in pieces of `size` (the last may be shorter)."""
    buffer = bytearray()
    for line in source:
        buffer += line
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def store_upload(engine: Engine, user_id: int, table: TableDef, rows: int) -> str:
    """Store the generated file as a queued job with 1 MiB chunks; return the job id."""
    job_id = uuid.uuid4().hex
    options = {
        "encoding": "utf-8",
        "delimiter": ",",
        "has_bom": False,
        "on_error": "skip",
        "columns": list(FIELDS),
    }
    size = 0
    with engine.begin() as conn:
        conn.execute(
            insert(import_jobs).values(
                id=job_id,
                user_id=user_id,
                table_id=table.id,
                table_name=table.name,
                status="uploading",
                options=options,
            )
        )
        for seq, data in enumerate(pieces(lines(rows, valid_only=False))):
            conn.execute(
                insert(upload_chunks).values(job_id=job_id, seq=seq, start_offset=size, data=data)
            )
            size += len(data)
        conn.execute(
            import_jobs.update()
            .where(import_jobs.c.id == job_id)
            .values(status="queued", size_bytes=size)
        )
    return job_id


def plain_copy(url: str, table: TableDef, rows: int) -> float:
    """Return the seconds PostgreSQL's COPY (FORMAT csv) takes for the valid rows."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier(table.pg_schema, table.name), sql.SQL(", ").join(map(sql.Identifier, FIELDS))
    )
    # Streamed from a file (page cache): COPY is timed alone and memory stays the engine's.
    with tempfile.TemporaryFile() as file, psycopg.connect(url) as conn:
        for piece in pieces(lines(rows, valid_only=True)):
            file.write(piece)
        file.seek(0)
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(statement) as copy:
            while piece := file.read(CHUNK):
                copy.write(piece)
        conn.commit()
        return time.perf_counter() - started


def peak_rss_mib() -> float:
    """Return this process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clone_upload(engine: Engine, job_id: str, table: TableDef) -> str:
    """Return a new queued job with the same chunks as `job_id`, for `table`."""
    new_id = uuid.uuid4().hex
    with engine.begin() as conn:
        job = conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).one()
        conn.execute(
            insert(import_jobs).values(
                id=new_id,
                user_id=job.user_id,
                table_id=table.id,
                table_name=table.name,
                status="queued",
                options=job.options,
                size_bytes=job.size_bytes,
            )
        )
        conn.execute(
            insert(upload_chunks).from_select(
                ["job_id", "seq", "start_offset", "data"],
                select(
                    literal(new_id), upload_chunks.c.seq, upload_chunks.c.start_offset,
                    upload_chunks.c.data,
                ).where(upload_chunks.c.job_id == job_id),
            )
        )  # fmt: skip
    return new_id


def bench(engine: Engine, url: str, user_id: int, rows: int, repeat: int) -> None:
    """Run one size `repeat` times, DMS and COPY alternating; print the best of each."""
    schemas = Schemas(engine, Catalog())
    bad = sum(1 for i in range(rows) if i % 100 == 99)
    ours, theirs, rss, child_rss = [], [], 0.0, 0.0
    upload: str | None = None
    for _ in range(repeat):
        target = schemas.create_table(user_id, f"bench_{rows}_{uuid.uuid4().hex[:6]}", FIELDS)
        twin = schemas.create_table(user_id, f"copy_{rows}_{uuid.uuid4().hex[:6]}", FIELDS)
        if upload is None:  # stored once, never run: a job's file is deleted when it ends
            upload = store_upload(engine, user_id, target, rows)
        job_id = clone_upload(engine, upload, target)
        with TreePeak(os.getpid()) as child:
            started = time.perf_counter()
            outcome = run_import(engine, Catalog(), job_id)
            ours.append(time.perf_counter() - started)
        rss, child_rss = peak_rss_mib(), max(child_rss, child.peak_mib)
        assert (outcome.rows_imported, outcome.rows_rejected) == (rows - bad, bad), outcome
        theirs.append(plain_copy(url, twin, rows))
        with engine.connect() as conn:
            for table in (target, twin):
                count = conn.execute(select(func.count()).select_from(table.table)).scalar()
                assert count == rows - bad, (table.name, count)
        schemas.delete_table(user_id, twin.name)
        schemas.delete_table(user_id, target.name)
    best, base = min(ours), min(theirs)
    print(
        f"{rows:>9,} rows ({bad:,} bad), best of {repeat}: "
        f"DMS {best:6.2f} s ({rows / best:9,.0f} rows/s) | "
        f"COPY {base:6.2f} s ({(rows - bad) / base:9,.0f} rows/s) | ratio {best / base:4.2f} | "
        f"peak RSS {rss:.0f} MiB, reader child {child_rss:.0f} MiB",
        flush=True,
    )
    print(f"  all runs: DMS {_seconds(ours)} | COPY {_seconds(theirs)}", flush=True)


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    """Create a scratch database, run each size, drop the database."""
    sizes = [int(arg) for arg in sys.argv[1:]] or [100_000, 1_000_000]
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    with fresh_database("dms_bench_engine") as url:
        engine = create_engine(url, connect_args={"options": "-c TimeZone=UTC"})
        try:
            with engine.connect() as conn:
                user_id = conn.execute(select(users.c.id)).scalar_one()
            started = time.perf_counter()
            warm_up()  # what a worker does once at start-up: big imports read in a child process
            print(
                f"reader process server started in {time.perf_counter() - started:.2f} s (once "
                f"per worker); peak RSS before importing: {peak_rss_mib():.1f} MiB"
            )
            for rows in sizes:
                bench(engine, plain(url), user_id, rows, repeat)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
