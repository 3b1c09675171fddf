"""The import engine against a real PostgreSQL: counts, error lines, resume, locks, the end mail."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from dms import migrate
from dms.auth.users import User, create_user
from dms.engine import import_reader
from dms.engine.catalog import Catalog, TableDef
from dms.engine.csvreader import detect_format, read_records
from dms.engine.ddl import Schemas
from dms.engine.errors import ConversionError, TableBusy
from dms.engine.import_fast import fast_check
from dms.engine.import_sweep import drop_ended_uploads
from dms.engine.importing import (
    JOB_LOCK_CLASS,
    ImportBusy,
    reap_stale_jobs,
    request_cancel,
    run_import,
)
from dms.engine.jobstatus import error_rows
from dms.engine.locks import TABLE_LOCK_CLASS
from dms.engine.types import parse_column_spec
from dms.tables import import_jobs, outbox, upload_chunks
from tests.scratchdb import scratch_database
from tests.test_import_fast import FORMS

FIELDS = {
    "name": "text",
    "email": "email unique",
    "qty": "integer not null",
    "born": "date",
}
HEADER = "name,email,qty,born"


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="session")
def engine(server_url: str) -> Iterator[Engine]:
    """Return an engine on a fresh, migrated database of the test server, dropped after it."""
    with scratch_database(server_url, "helper_import_") as url:
        made = create_engine(
            make_url(url).set(drivername="postgresql+psycopg"),
            connect_args={"options": "-c TimeZone=UTC"},
        )
        try:
            migrate.upgrade(made)
            yield made
        finally:
            made.dispose()


@pytest.fixture(scope="session")
def owner(engine: Engine) -> User:
    """Return the user owning every test table."""
    name = f"importer_{uuid.uuid4().hex[:8]}"
    return create_user(engine, name, f"{name}@example.com", "correct horse battery")


@pytest.fixture(params=["thread", "process"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the upload read in a thread, then in a child process."""
    threshold = 0 if request.param == "process" else 1 << 40
    monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", threshold)
    return str(request.param)


@pytest.fixture
def catalog() -> Catalog:
    """Return a fresh catalog."""
    return Catalog()


@pytest.fixture
def make_table(engine: Engine, owner: User, catalog: Catalog) -> Any:
    """Return a factory of tables with unique names."""

    def factory(fields: dict[str, str] | None = None) -> TableDef:
        name = f"t_{uuid.uuid4().hex[:12]}"
        return Schemas(engine, catalog).create_table(owner.id, name, fields or FIELDS)

    return factory


def upload(
    engine: Engine,
    owner: User,
    table: TableDef,
    data: bytes,
    *,
    chunk: int = 1 << 20,
    on_error: str = "skip",
    encoding: str | None = None,
    delimiter: str | None = None,
) -> str:
    """Store `data` as a queued upload (job row + chunks), as the upload endpoint does."""
    enc, delim, has_bom = detect_format(data[:65536], encoding=encoding, delimiter=delimiter)
    header = next(read_records([data[:65536]], encoding=enc, delimiter=delim))
    known = {c.name for c in table.columns}
    columns = [n.strip().lower() if n.strip().lower() in known else None for n in header.fields]
    job_id = uuid.uuid4().hex
    options = {
        "encoding": enc,
        "delimiter": delim,
        "has_bom": has_bom,
        "on_error": on_error,
        "columns": columns,
    }
    with engine.begin() as conn:
        conn.execute(
            insert(import_jobs).values(
                id=job_id,
                user_id=owner.id,
                table_id=table.id,
                table_name=table.name,
                status="queued",
                options=options,
                size_bytes=len(data),
            )
        )
        for seq, start in enumerate(range(0, len(data), chunk)):
            conn.execute(
                insert(upload_chunks).values(
                    job_id=job_id, seq=seq, start_offset=start, data=data[start : start + chunk]
                )
            )
    return job_id


def job(engine: Engine, job_id: str) -> Any:
    """Return the job row."""
    with engine.connect() as conn:
        return conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).one()


def errors(engine: Engine, job_id: str) -> list[tuple[int, str | None, str | None, str]]:
    """Return the job's error rows (line, column, value, message) in line order."""
    with engine.connect() as conn:
        return [
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(error_rows(job_id))
        ]


def rows(engine: Engine, table: TableDef, *columns: str) -> list[tuple[Any, ...]]:
    """Return the table's rows (the given columns) in id order."""
    t = table.table
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*(t.c[c] for c in columns)).order_by(t.c.id))]


def csv_bytes(*lines: str, header: str = HEADER) -> bytes:
    """Return a UTF-8 CSV with `header` and `lines`."""
    return ("\n".join([header, *lines]) + "\n").encode()


def good(i: int) -> str:
    """Return a valid row of the default table."""
    return f"name {i},user{i}@example.com,{i},2020-01-{1 + i % 28:02d}"


# --- counts and the error report ----------------------------------------------------------


def test_bad_rows_of_every_kind_are_reported_on_their_physical_lines(
    engine, owner, make_table, reader
):
    table = make_table()
    long_name = "x" * 131073
    data = b"\n".join(
        [
            HEADER.encode(),
            b"ann,ann@example.com,1,2020-01-01",  # 2
            b"bob,bob@example.com,two,2020-01-02",  # 3 bad int
            b'"multi\nline",carl@example.com,3,2020-01-03',  # 4-5 good, quoted newline
            b"dan,dan@example.com,4,2023-02-30",  # 6 bad date
            b"eve,eve-at-example.com,5,2020-01-05",  # 7 bad email
            b"f\x00y,fay@example.com,6,2020-01-06",  # 8 NUL
            b"gus,gus@example.com,7",  # 9 ragged
            b"h\xe9l,hel@example.com,8,2020-01-08",  # 10 invalid UTF-8
            f"{long_name},ivy@example.com,9,2020-01-09".encode(),  # 11 over-long field
            b"jim,jim@example.com,,2020-01-10",  # 12 missing required
            b'"kim\n\nsecond",kim@example.com,11,',  # 13-15 good, empty date is NULL
            b"lou,lou@example.com,x,2020-13-01",  # 16 two bad fields, one row
            b"max,max@example.com,13,2020-01-13",  # 17
        ]
    )
    job_id = upload(engine, owner, table, data + b"\n", chunk=7)
    outcome = run_import(engine, Catalog(), job_id, batch_rows=3)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected, outcome.ran) == (
        "completed_with_errors",
        4,
        9,
        True,
    )
    row = job(engine, job_id)
    assert (row.rows_processed, row.rows_total, row.checkpoint_offset) == (13, 13, len(data) + 1)
    assert row.checkpoint_line == 17 and row.finished_at is not None
    found = [
        (line, column, message.split(" ")[0]) for line, column, _, message in errors(engine, job_id)
    ]
    assert found == [
        (3, "qty", "not"),
        (6, "born", "not"),
        (7, "email", "not"),
        (8, None, "NUL"),
        (9, None, "expected"),
        (10, None, "invalid"),
        (11, None, "field"),
        (12, "qty", "required:"),
        (16, "qty", "not"),
        (16, "born", "not"),
    ]
    assert errors(engine, job_id)[0][2] == "two"
    assert rows(engine, table, "name", "qty") == [
        ("ann", 1),
        ("multi\nline", 3),
        ("kim\n\nsecond", 11),
        ("max", 13),
    ]


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("batch_rows", [1, 2, 1000])
def test_counts_do_not_depend_on_chunk_or_batch_size(engine, owner, make_table, chunk, batch_rows):
    table = make_table()
    lines = [good(i) if i % 3 else f"bad {i},x,{i},2020-01-01" for i in range(1, 13)]
    job_id = upload(engine, owner, table, csv_bytes(*lines), chunk=chunk)
    outcome = run_import(engine, Catalog(), job_id, batch_rows=batch_rows)
    assert (outcome.rows_imported, outcome.rows_rejected) == (8, 4)
    assert [e[0] for e in errors(engine, job_id)] == [4, 7, 10, 13]
    assert len(rows(engine, table, "id")) == 8


def test_values_with_tabs_backslashes_and_quotes_are_stored_exactly(engine, owner, make_table):
    table = make_table({"a": "text", "b": "varchar(20)", "j": "jsonb"})
    tricky = ["t\\ab\tc", "back\\slash\\N", "cr\r\nlf", '"quoted"', "\\N"]
    lines = [
        f'"{v.replace(chr(34), 2 * chr(34))}",x{i},"{{""k"": ""v\\t{i}""}}"'
        for i, v in enumerate(tricky)
    ]
    job_id = upload(engine, owner, table, csv_bytes(*lines, header="a,b,j"))
    assert run_import(engine, Catalog(), job_id).status == "succeeded"
    assert rows(engine, table, "a", "b", "j") == [
        (v, f"x{i}", {"k": f"v\t{i}"}) for i, v in enumerate(tricky)
    ]


def test_empty_cells_take_the_default_or_null_and_absent_columns_their_default(
    engine, owner, make_table
):
    table = make_table(
        {
            "name": "text",
            "qty": "integer not null default 7",
            "price": "numeric(10,2) default 1.5",
            "flag": "boolean default true",
            "at": "timestamptz default '2024-01-01 10:00:00+02:00'",
            "note": "text default 'n/a'",
        }
    )
    job_id = upload(
        engine, owner, table, csv_bytes("a,,,,", "b,3,2.345,no,", header="name,qty,price,flag,at")
    )
    assert run_import(engine, Catalog(), job_id).status == "succeeded"
    got = rows(engine, table, "name", "qty", "price", "flag", "at", "note")
    assert [(r[0], r[1], str(r[2]), r[3], r[4].isoformat(), r[5]) for r in got] == [
        ("a", 7, "1.50", True, "2024-01-01T08:00:00+00:00", "n/a"),
        ("b", 3, "2.35", False, "2024-01-01T08:00:00+00:00", "n/a"),
    ]


def test_a_file_with_only_a_header_succeeds_with_nothing(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes())
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("succeeded", 0, 0)
    row = job(engine, job_id)
    assert (row.rows_total, row.checkpoint_offset) == (0, row.size_bytes)


def test_ignored_columns_are_skipped(engine, owner, make_table):
    table = make_table()
    data = csv_bytes("zzz,ann,1,ann@example.com", header="extra,name,qty,email")
    job_id = upload(engine, owner, table, data)
    assert run_import(engine, Catalog(), job_id).rows_imported == 1
    assert rows(engine, table, "name", "qty", "email", "born") == [
        ("ann", 1, "ann@example.com", None)
    ]


def test_an_unreadable_file_fails_the_job(engine, owner, make_table, reader):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    with engine.begin() as conn:
        conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == job_id)
            .values(options={"encoding": "utf-16", "delimiter": ",", "columns": list(FIELDS)})
        )
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.status, outcome.rows_imported) == ("failed", 0)
    assert "encoding" in job(engine, job_id).error


# --- on_error=abort -------------------------------------------------------------------


def test_on_error_abort_stores_nothing_but_reports_every_bad_row(engine, owner, make_table, reader):
    table = make_table()
    lines = [good(i) for i in range(1, 21)]
    lines[4] = "bad,bad@example.com,x,2020-01-01"  # line 6
    lines[15] = good(2)  # line 17: duplicate email of line 3, in a later batch
    lines[18] = "short,row"  # line 20
    job_id = upload(engine, owner, table, csv_bytes(*lines), on_error="abort")
    outcome = run_import(engine, Catalog(), job_id, batch_rows=4)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("failed", 0, 3)
    assert [e[:2] for e in errors(engine, job_id)] == [(6, "qty"), (17, "email"), (20, None)]
    assert rows(engine, table, "id") == []
    row = job(engine, job_id)
    assert row.rows_processed == 20 and "nothing was stored" in row.error


def test_on_error_abort_without_unique_columns_stops_loading_but_reads_on(
    engine, owner, make_table
):
    table = make_table({"name": "text", "qty": "integer"})
    lines = [f"n{i},{i if i % 7 else 'x'}" for i in range(1, 30)]
    job_id = upload(engine, owner, table, csv_bytes(*lines, header="name,qty"), on_error="abort")
    outcome = run_import(engine, Catalog(), job_id, batch_rows=5)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("failed", 0, 4)
    assert [e[0] for e in errors(engine, job_id)] == [8, 15, 22, 29]
    assert rows(engine, table, "id") == []


def test_on_error_abort_with_good_rows_stores_them_all(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 11))), on_error="abort")
    outcome = run_import(engine, Catalog(), job_id, batch_rows=3)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("succeeded", 10, 0)
    assert len(rows(engine, table, "id")) == 10
    assert job(engine, job_id).rows_total == 10


# --- unique columns -------------------------------------------------------------------


def test_duplicates_in_the_file_and_against_existing_rows_are_row_errors(engine, owner, make_table):
    table = make_table({"email": "email unique", "code": "integer unique", "name": "text"})
    with engine.begin() as conn:
        conn.execute(insert(table.table).values(email="old@example.com", code=1, name="old"))
    data = csv_bytes(
        "a@example.com,10,a",  # 2
        "old@example.com,11,b",  # 3 exists
        "c@example.com,1,c",  # 4 code exists
        "a@example.com,12,d",  # 5 earlier line, same batch
        ",13,e",  # 6 NULL email
        ",14,f",  # 7 NULLs never collide
        "g@example.com,010,g",  # 8 010 = 10 as an integer: earlier line, other batch
        "h@example.com,15,h",  # 9
        "h@example.com,15,i",  # 10 both columns: reported once, first column
        header="email,code,name",
    )
    job_id = upload(engine, owner, table, data)
    outcome = run_import(engine, Catalog(), job_id, batch_rows=4)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == (
        "completed_with_errors",
        4,
        5,
    )
    assert [(e[0], e[1], e[2]) for e in errors(engine, job_id)] == [
        (3, "email", "old@example.com"),
        (4, "code", "1"),
        (5, "email", "a@example.com"),
        (8, "code", "010"),
        (10, "email", "h@example.com"),
    ]
    assert all(e[3].startswith("duplicate value for unique column") for e in errors(engine, job_id))
    assert [r[0] for r in rows(engine, table, "name")] == ["old", "a", "e", "f", "h"]


def test_reimporting_the_same_file_rejects_every_row_as_duplicate(engine, owner, make_table):
    table = make_table()
    data = csv_bytes(*map(good, range(1, 51)))
    first = run_import(engine, Catalog(), upload(engine, owner, table, data), batch_rows=20)
    assert (first.status, first.rows_imported) == ("succeeded", 50)
    job_id = upload(engine, owner, table, data)
    second = run_import(engine, Catalog(), job_id, batch_rows=20)
    assert (second.status, second.rows_imported, second.rows_rejected) == (
        "completed_with_errors",
        0,
        50,
    )
    assert len(rows(engine, table, "id")) == 50
    assert {e[3] for e in errors(engine, job_id)} == {"duplicate value for unique column email"}


def test_rows_postgresql_refuses_are_isolated_and_rejected(engine, owner, make_table):
    # Constraints the registry does not know about stand in for a concurrent writer's duplicate
    # or a value a converter let through: COPY refuses the batch and bisection finds the rows.
    table = make_table()
    target = f'"{table.pg_schema}"."{table.name}"'
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {target} ADD CONSTRAINT small CHECK (qty < 100)"))
        conn.execute(text(f"CREATE UNIQUE INDEX ON {target} (name)"))
    lines = [good(i) for i in range(1, 11)]
    lines[3] = "name 4,big@example.com,100,2020-01-01"  # line 5: check
    lines[7] = "name 2,dup@example.com,8,2020-01-01"  # line 9: unique index
    job_id = upload(engine, owner, table, csv_bytes(*lines))
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.rows_imported, outcome.rows_rejected) == (8, 2)
    found = errors(engine, job_id)
    assert [e[0] for e in found] == [5, 9]
    assert "small" in found[0][3] and "duplicate" in found[1][3]
    assert len(rows(engine, table, "id")) == 8


def test_a_value_too_long_for_its_unique_index_is_a_row_error(engine, owner, make_table):
    # PostgreSQL refuses a btree entry over ~2.7 kB (class 54, "program limit exceeded"): one
    # such row is rejected like any refused row, not a failed job.
    table = make_table({"name": "text unique", "qty": "integer"})
    noise = "".join(random.Random(3).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=20_000))
    lines = [f"name {i},{i}" for i in range(1, 7)]
    lines[2] = f"{noise},3"  # line 4: too long to index, and not compressible enough
    job_id = upload(engine, owner, table, csv_bytes(*lines, header="name,qty"))
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == (
        "completed_with_errors",
        5,
        1,
    )
    found = errors(engine, job_id)
    assert [(e[0], e[1]) for e in found] == [(4, None)]
    assert "index row" in found[0][3]
    assert len(rows(engine, table, "id")) == 5


# --- resume, concurrency, cancel ------------------------------------------------------


class Crash(Exception):
    """The simulated death of a worker."""


def test_a_crash_after_committed_batches_resumes_with_every_row_once(
    engine, owner, make_table, reader
):
    table = make_table()
    lines = [good(i) if i % 10 else f"bad{i},x,{i},2020-01-01" for i in range(1, 101)]
    data = csv_bytes(*lines)
    job_id = upload(engine, owner, table, data, chunk=97)

    def crash_after_three(row: Any) -> None:
        if row.rows_processed >= 3 * 15:
            raise Crash

    with pytest.raises(Crash):
        run_import(engine, Catalog(), job_id, batch_rows=15, on_progress=crash_after_three)
    mid = job(engine, job_id)
    assert (mid.status, mid.rows_processed, mid.rows_imported, mid.rows_rejected) == (
        "running",
        45,
        41,
        4,
    )
    assert 0 < mid.checkpoint_offset < len(data) and mid.checkpoint_line == 46
    outcome = run_import(engine, Catalog(), job_id, batch_rows=15)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == (
        "completed_with_errors",
        90,
        10,
    )
    assert [e[0] for e in errors(engine, job_id)] == [i + 1 for i in range(10, 101, 10)]
    emails = [r[0] for r in rows(engine, table, "email")]
    assert len(emails) == len(set(emails)) == 90
    assert job(engine, job_id).attempts == 2


def chunk_count(engine: Engine, job_id: str) -> int:
    """Return how many stored chunks of the job's file are left."""
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(upload_chunks.c.job_id == job_id)
        ).scalar_one()


def test_the_stored_file_outlives_a_crash_and_goes_when_the_job_ends(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 61))), chunk=100)
    stored = chunk_count(engine, job_id)
    assert stored > 10

    def crash_after_two(row: Any) -> None:
        if row.rows_processed >= 2 * 15:
            raise Crash

    with pytest.raises(Crash):
        run_import(engine, Catalog(), job_id, batch_rows=15, on_progress=crash_after_two)
    assert chunk_count(engine, job_id) == stored  # the resume needs the file
    outcome = run_import(engine, Catalog(), job_id, batch_rows=15)
    assert (outcome.status, outcome.rows_imported) == ("succeeded", 60)
    assert chunk_count(engine, job_id) == 0
    assert job(engine, job_id).size_bytes > 0  # the job keeps what it said about the file


def test_the_sweep_drops_files_of_ended_jobs_only(engine, owner, make_table):
    table = make_table()
    ended = upload(engine, owner, table, csv_bytes(good(1)))
    waiting = upload(engine, owner, table, csv_bytes(good(2)))
    with engine.begin() as conn:  # a worker that died between ending the job and the cleanup
        conn.execute(
            update(import_jobs).where(import_jobs.c.id == ended).values(status="succeeded")
        )
    assert drop_ended_uploads(engine) >= 1
    assert (chunk_count(engine, ended), chunk_count(engine, waiting)) == (0, 1)


def test_a_job_held_by_another_worker_is_not_run(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    with engine.connect() as other:
        other.execute(
            text("SELECT pg_advisory_lock(:k, hashtext(:j))"), {"k": JOB_LOCK_CLASS, "j": job_id}
        )
        outcome = run_import(engine, Catalog(), job_id)
        other.execute(
            text("SELECT pg_advisory_unlock(:k, hashtext(:j))"),
            {"k": JOB_LOCK_CLASS, "j": job_id},
        )
        other.commit()
    assert (outcome.ran, outcome.status, outcome.rows_imported) == (False, "queued", 0)
    assert run_import(engine, Catalog(), job_id).rows_imported == 1


def test_two_concurrent_runs_of_one_job_import_once(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 2001))))
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def worker() -> None:
        barrier.wait()
        outcomes.append(run_import(engine, Catalog(), job_id, batch_rows=100))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.ran for o in outcomes) == [False, True]
    assert len(rows(engine, table, "id")) == 2000
    assert job(engine, job_id).attempts == 1


def test_an_ended_job_is_not_run_again(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    assert run_import(engine, Catalog(), job_id).ran
    again = run_import(engine, Catalog(), job_id)
    assert (again.ran, again.status, again.rows_imported) == (False, "succeeded", 1)
    assert len(rows(engine, table, "id")) == 1


def test_cancel_stops_at_the_next_batch_and_keeps_committed_rows(engine, owner, make_table, reader):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 101))))
    outcome = run_import(
        engine,
        Catalog(),
        job_id,
        batch_rows=30,
        on_progress=lambda _: request_cancel(engine, job_id),
    )
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("cancelled", 30, 0)
    assert len(rows(engine, table, "id")) == 30
    assert job(engine, job_id).finished_at is not None


def test_a_job_cancelled_while_queued_ends_before_loading(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    request_cancel(engine, job_id)
    outcome = run_import(engine, Catalog(), job_id, mail_to="me@example.com")
    assert (outcome.status, outcome.rows_imported, outcome.ran) == ("cancelled", 0, True)
    assert rows(engine, table, "id") == []
    assert len(outbox_rows(engine, job_id)) == 1


def test_cancel_of_an_abort_job_stores_nothing(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 101))), on_error="abort")
    outcome = run_import(
        engine,
        Catalog(),
        job_id,
        batch_rows=30,
        on_progress=lambda _: request_cancel(engine, job_id),
    )
    assert (outcome.status, outcome.rows_imported) == ("cancelled", 0)
    assert rows(engine, table, "id") == []


# --- tables that change or are held -----------------------------------------------------


def test_a_table_deleted_before_the_job_runs_fails_the_job(engine, owner, make_table, catalog):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    Schemas(engine, catalog).delete_table(owner.id, table.name)
    outcome = run_import(engine, Catalog(), job_id, mail_to="me@example.com")
    assert (outcome.status, outcome.rows_imported, outcome.ran) == ("failed", 0, True)
    assert "deleted" in job(engine, job_id).error
    assert "failed" in outbox_rows(engine, job_id)[0].body


def test_a_column_dropped_after_the_upload_fails_the_job(engine, owner, make_table, catalog):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    Schemas(engine, catalog).remove_column(owner.id, table.name, "born")
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.status, outcome.rows_imported) == ("failed", 0)
    assert "born" in job(engine, job_id).error


def test_a_table_held_by_ddl_raises_import_busy_and_requeues(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    with engine.begin() as ddl:
        ddl.execute(
            text("SELECT pg_try_advisory_xact_lock(:k, :t)"),
            {"k": TABLE_LOCK_CLASS, "t": table.id},
        )
        with pytest.raises(ImportBusy):
            run_import(engine, Catalog(), job_id)
        assert job(engine, job_id).status == "queued"
    assert run_import(engine, Catalog(), job_id).status == "succeeded"


def test_ddl_on_a_table_being_imported_is_refused(engine, owner, make_table, catalog):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(*map(good, range(1, 11))))
    refused: list[str] = []

    def try_ddl(row: Any) -> None:
        try:
            Schemas(engine, catalog).add_column(owner.id, table.name, "extra", "text")
        except TableBusy as exc:
            refused.append(exc.code)

    assert run_import(engine, Catalog(), job_id, batch_rows=5, on_progress=try_ddl).ran
    assert refused == ["table_busy", "table_busy"]
    Schemas(engine, catalog).add_column(owner.id, table.name, "extra", "text")  # free again


# --- encodings and delimiters -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        ("name;email;qty\nJosé;jose@example.com;1\nZoë;zoe@example.com;2\n", "latin-1", ";"),
        ("name\temail\tqty\nJosé\tjose@example.com\t1\nZoë\tzoe@example.com\t2\n", "cp1252", "\t"),
        ("\ufeffname,email,qty\nJosé,jose@example.com,1\nZoë,zoe@example.com,2\n", "utf-8", ","),
    ],
    ids=["latin-1-semicolon", "cp1252-tab", "utf-8-bom"],
)
def test_declared_encodings_delimiters_and_a_bom(
    engine, owner, make_table, data, encoding, delimiter
):
    table = make_table()
    raw = data.encode(encoding)
    job_id = upload(engine, owner, table, raw, chunk=3, encoding=encoding, delimiter=delimiter)
    outcome = run_import(engine, Catalog(), job_id, batch_rows=1)
    assert (outcome.status, outcome.rows_imported) == ("succeeded", 2)
    assert rows(engine, table, "name", "qty") == [("José", 1), ("Zoë", 2)]


def test_a_bom_file_resumes_after_a_crash(engine, owner, make_table):
    table = make_table()
    data = b"\xef\xbb\xbf" + csv_bytes(*map(good, range(1, 7)))
    job_id = upload(engine, owner, table, data, chunk=2)

    def crash(row: Any) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_import(engine, Catalog(), job_id, batch_rows=2, on_progress=crash)
    assert run_import(engine, Catalog(), job_id, batch_rows=2).rows_imported == 6
    assert len(rows(engine, table, "id")) == 6


# --- the end mail and the sweeper -------------------------------------------------------


def outbox_rows(engine: Engine, job_id: str) -> list[Any]:
    """Return the outbox rows of a job."""
    with engine.connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.job_id == job_id)).all()


def test_the_end_queues_exactly_one_mail_with_counts_errors_and_link(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1), "bad,x,1,2020-01-01"))
    run_import(engine, Catalog(), job_id, mail_to="me@example.com", public_url="https://dms.test/")
    run_import(engine, Catalog(), job_id, mail_to="me@example.com", public_url="https://dms.test")
    (mail,) = outbox_rows(engine, job_id)
    assert mail.recipient == "me@example.com"
    assert table.name in mail.subject and "1 imported, 1 rejected" in mail.subject
    assert "Status: completed_with_errors" in mail.body and "line 3, email" in mail.body
    assert f"https://dms.test/import/jobs/{job_id}/errors/" in mail.body


def test_no_mail_without_a_recipient(engine, owner, make_table):
    table = make_table()
    job_id = upload(engine, owner, table, csv_bytes(good(1)))
    run_import(engine, Catalog(), job_id)
    assert outbox_rows(engine, job_id) == []


def test_reap_requeues_dead_running_jobs_and_returns_old_queued_ones(engine, owner, make_table):
    table = make_table()
    dead, alive, lost, fresh = (upload(engine, owner, table, csv_bytes(good(i))) for i in range(4))
    old = sa.func.now() - sa.text("interval '5 minutes'")
    with engine.begin() as conn:
        conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id.in_([dead, alive]))
            .values(status="running", heartbeat_at=old)
        )
        conn.execute(update(import_jobs).where(import_jobs.c.id == lost).values(heartbeat_at=old))
    with engine.connect() as worker:  # a live worker holds `alive` (its heartbeat lags)
        worker.execute(
            text("SELECT pg_advisory_lock(:k, hashtext(:j))"), {"k": JOB_LOCK_CLASS, "j": alive}
        )
        worker.commit()
        reaped = reap_stale_jobs(engine, stale_after_s=60)
        worker.execute(
            text("SELECT pg_advisory_unlock(:k, hashtext(:j))"), {"k": JOB_LOCK_CLASS, "j": alive}
        )
        worker.commit()
    assert dead in reaped and lost in reaped
    assert alive not in reaped and fresh not in reaped
    assert (job(engine, dead).status, job(engine, alive).status) == ("queued", "running")
    # Its worker gone (lock released), `alive` is stale too; the others were just touched.
    mine = {dead, alive, lost, fresh}  # other tests' jobs share the database
    assert [j for j in reap_stale_jobs(engine, stale_after_s=60) if j in mine] == [alive]
    assert run_import(engine, Catalog(), dead).rows_imported == 1


def test_duplicates_across_batches_are_caught_before_and_after_probing(engine, owner, make_table):
    # COPY goes first; a conflict switches to probing for a few batches, then COPY-first again.
    table = make_table()
    lines = [good(i) for i in range(1, 41)]
    lines[9] = good(2)  # line 11 repeats line 3, two batches back
    lines[37] = good(30)  # line 39 repeats line 31, long after the probing batches
    job_id = upload(engine, owner, table, csv_bytes(*lines))
    outcome = run_import(engine, Catalog(), job_id, batch_rows=2)
    assert (outcome.rows_imported, outcome.rows_rejected) == (38, 2)
    assert [e[:3] for e in errors(engine, job_id)] == [
        (11, "email", "user2@example.com"),
        (39, "email", "user30@example.com"),
    ]


FAST_SAMPLES = [
    "0", "7", "-12", "+3", "007", "123456789", "1234567890", "2147483648", "99999", "-",
    "1.5", "12345678.99", "1.", ".5", "1.234", "1e5", "1E-400", "0.0", "-0", " 1", "1 ",
    "2024-02-28", "2024-02-29", "2023-02-29", "0000-01-01", "2024-13-01", "2024-1-01",
    "2024-01-01 10:00", "2024-01-01T23:59:59.123456", "2024-01-01 24:00", "2024-01-31 10:00",
    "2024-01-01 10:00:00+02", "10:00", "23:59:59.5", "7:00", "a@b.cd", "x.y+z@mail.example.com",
    "a..b@x.com", "@x.com", "a@x", "a@-x.com", "Ab@EXAMPLE.COM", "é@x.com", "a@x.c0m",
    "123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-42661417400", "true",
    "f", "yes", "abcdef", "x" * 70 + "@x.com", "١٢٣", "12\n3", "1\t2",
    "a-b@x-y.example.com", "a@x--y.com", "a@x-.com", "a.@x.com", ".a@x.com", "a@x..com",
    "a@x.com.", "a@.x.com", "a@x.xn--p1ai", "a@x.c", "a_b+c@x.io", "a@x_y.com", "a b@x.com",
    "1999999999", "-1999999999", "2147483647", "2147483648", "-2147483649", "01999999999",
    "8999999999999999999", "9223372036854775807", "9223372036854775808", "-8999999999999999999",
    "ba@", "a@b.", "a@b.c", "-", "+", ".", "1.", "e06046f2-", "2024-01-", "2024-01-01 10:",
]  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        "smallint", "integer", "bigint", "numeric(10,2)", "numeric(5)", "numeric", "double",
        "date", "timestamp", "time", "uuid", "email", "varchar(3)",
    ],
)  # fmt: skip
@pytest.mark.parametrize("possessive", FORMS)
def test_fast_checks_accept_only_what_the_converter_returns_unchanged(spec, possessive):
    column_type = parse_column_spec(spec).type
    check = fast_check(column_type, possessive=possessive)
    assert check is not None
    rng = random.Random(spec)
    alphabet = "0123456789+-.:eE T@abxz"
    samples = FAST_SAMPLES + [
        "".join(rng.choices(alphabet, k=rng.randint(1, 25))) for _ in range(3000)
    ]
    for value in samples:
        if check.passes([value]):
            assert column_type.from_csv(value) == value, value
    assert check.passes(["", ""])
    if check.pattern is not None:
        assert not check.passes(["1\n2"]) and not check.passes(["\n"])


def test_bulk_and_one_by_one_conversion_agree(engine, owner, make_table):
    # Blocks that fail the fast check go value by value through the converter: same outcome.
    table = make_table({"qty": "integer", "born": "date", "price": "numeric(6,2)"})
    rng = random.Random(5)
    values = ["1", "x", "", "2024-01-31", "2023-02-29", "12.345", "1e3", "99999.99", "-5", "1\n2"]
    specs = ("integer", "date", "numeric(6,2)")
    records = [[rng.choice(values) for _ in specs] for _ in range(400)]
    expected_bad, line = set(), 2
    for cells in records:
        for cell, spec in zip(cells, specs, strict=True):
            try:
                if cell:
                    parse_column_spec(spec).type.from_csv(cell)
            except ConversionError:
                expected_bad.add(line)
        line += 1 + sum(cell.count("\n") for cell in cells)
    text = [",".join(f'"{c}"' if "\n" in c else c for c in cells) for cells in records]
    job_id = upload(engine, owner, table, csv_bytes(*text, header="qty,born,price"))
    run_import(engine, Catalog(), job_id, batch_rows=150)
    assert {e[0] for e in errors(engine, job_id)} == expected_bad
    assert len(rows(engine, table, "id")) == len(records) - len(expected_bad)


@pytest.mark.parametrize(
    "spec",
    [
        "integer default -3",
        "bigint default 9000000000",
        "numeric default 12.50",
        "numeric(10,3) default -0.125",
        "double default 1e20",
        "boolean default false",
        "date default '2024-02-29'",
        "timestamp default '2024-01-01 10:00:00.5'",
        "timestamptz default '2024-01-01 10:00:00-05:00'",
        "time default '23:59:59.999999'",
        "uuid default '123e4567-e89b-12d3-a456-426614174000'",
        'jsonb default \'{"a": [1, "x\\ty"]}\'',
        "text default 'tab\there \\ back'",
        "varchar(9) default 'it''s'",
        "email default 'a@example.com'",
    ],
)
def test_an_empty_cell_stores_the_column_default_exactly(engine, owner, make_table, spec):
    table = make_table({"name": "text", "x": spec})
    job_id = upload(engine, owner, table, csv_bytes("a,", header="name,x"))
    assert run_import(engine, Catalog(), job_id).status == "succeeded"
    with engine.connect() as conn:
        stored = conn.execute(select(table.table.c.x)).scalar_one()
        database_default = conn.execute(
            text(
                f'INSERT INTO "{table.pg_schema}"."{table.name}" (name) VALUES (\'b\') RETURNING x'
            )
        ).scalar_one()
    assert stored == database_default == table.column("x").spec.default
