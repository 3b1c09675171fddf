"""The import engine (run_import) against PostgreSQL's own COPY of the same valid rows.

Usage: python bench/bench_import_engine.py [rows ...]   (default: 100000 1000000)

For each size: a 7-column CSV with 1% bad rows of several kinds is generated and stored as an
upload (1 MiB chunks + a queued job), imported with run_import, then the valid rows alone are
loaded with `COPY … FROM STDIN (FORMAT csv)` into a fresh identical table. The file is made and
stored a chunk at a time, so peak RSS is the engine's, not the benchmark's. The database is
DMS_BENCH_DATABASE_URL, DMS_TEST_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/test; a
fresh database is created on that server and dropped at the end. SPEC §4 asks ratio <= 2.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.engine import make_url

from dms import migrate
from dms.auth.users import create_user
from dms.engine.catalog import Catalog, TableDef
from dms.engine.ddl import Schemas
from dms.engine.importing import run_import
from dms.tables import import_jobs, upload_chunks

CHUNK = 1 << 20
FIELDS = {
    "name": "text",
    "email": "email unique",
    "qty": "integer",
    "price": "numeric(10,2)",
    "active": "boolean",
    "born": "date",
    "seen": "timestamp",
}
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
    data = list(pieces(lines(rows, valid_only=True)))  # in memory: the timing is COPY's alone
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for piece in data:
                copy.write(piece)
        conn.commit()
        return time.perf_counter() - started


def peak_rss_mib() -> float:
    """Return this process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(engine: Engine, url: str, user_id: int, rows: int) -> None:
    """Run one size and print its line."""
    schemas = Schemas(engine, Catalog())
    target = schemas.create_table(user_id, f"bench_{rows}_{uuid.uuid4().hex[:6]}", FIELDS)
    twin = schemas.create_table(user_id, f"copy_{rows}_{uuid.uuid4().hex[:6]}", FIELDS)
    job_id = store_upload(engine, user_id, target, rows)
    bad = sum(1 for i in range(rows) if i % 100 == 99)
    started = time.perf_counter()
    outcome = run_import(engine, Catalog(), job_id)
    ours = time.perf_counter() - started
    rss = peak_rss_mib()
    assert (outcome.rows_imported, outcome.rows_rejected) == (rows - bad, bad), outcome
    theirs = plain_copy(url, twin, rows)
    with engine.connect() as conn:
        for table in (target, twin):
            count = conn.execute(select(func.count()).select_from(table.table)).scalar()
            assert count == rows - bad, (table.name, count)
    print(
        f"{rows:>9,} rows ({bad:,} bad): DMS {ours:6.2f} s ({rows / ours:9,.0f} rows/s) | "
        f"COPY {theirs:6.2f} s ({(rows - bad) / theirs:9,.0f} rows/s) | "
        f"ratio {ours / theirs:4.2f} | peak RSS {rss:6.1f} MiB",
        flush=True,
    )


def main() -> None:
    """Create a scratch database, run each size, drop the database."""
    sizes = [int(arg) for arg in sys.argv[1:]] or [100_000, 1_000_000]
    server = make_url(
        os.environ.get("DMS_BENCH_DATABASE_URL")
        or os.environ.get("DMS_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"helper_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.set(database=name)
    engine = create_engine(
        url.set(drivername="postgresql+psycopg"), connect_args={"options": "-c TimeZone=UTC"}
    )
    try:
        migrate.upgrade(engine)
        user = create_user(engine, f"bench_{name[-6:]}", "bench@example.com", "bench password")
        print(f"peak RSS before importing: {peak_rss_mib():.1f} MiB")
        for rows in sizes:
            bench(engine, url.set(drivername="postgresql").render_as_string(False), user.id, rows)
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
