"""The import reader against a real PostgreSQL: resume offsets, batch sizes, its child process."""

from __future__ import annotations

import os
import pickle
import signal
import time
import types
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import Engine, delete

from dms.auth.users import User
from dms.engine import import_reader
from dms.engine.catalog import Catalog, TableDef
from dms.engine.ddl import Schemas
from dms.engine.import_plan import FIRST_BATCH_ROWS, Batch, ImportPlan
from dms.engine.import_reader import open_reader, produce_batches, stream_chunks
from dms.tables import upload_chunks
from tests.test_importing import FIELDS, csv_bytes, good, upload

OPTIONS = {"encoding": "utf-8", "delimiter": ","}


@pytest.fixture
def engine(app: Flask) -> Engine:
    """Return the test app's engine."""
    return app.extensions["dms"].db.engine


@pytest.fixture
def owner(make_user: Callable[..., User]) -> User:
    """Return a fresh user."""
    return make_user()


@pytest.fixture
def make_table(engine: Engine, owner: User) -> Callable[[], TableDef]:
    """Return a factory of tables of FIELDS with unique names."""
    return lambda: Schemas(engine, Catalog()).create_table(
        owner.id, f"r_{uuid.uuid4().hex[:12]}", FIELDS
    )


def plan_for(table: TableDef) -> ImportPlan:
    """Return the plan of a file with the default header for `table`."""
    return ImportPlan(table, list(FIELDS))


def signature(batches: list[Batch]) -> list[tuple[Any, ...]]:
    """Return what a loader uses of each batch."""
    return [
        (b.data, b.lines, b.keys, b.errors, b.records, b.rejected, b.end_offset) for b in batches
    ]


@pytest.mark.parametrize("offset", [0, 1, 6, 7, 8, 50, -1, "end"])
def test_chunks_resume_at_any_byte_offset(engine, owner, make_table, offset):
    data = csv_bytes(*map(good, range(1, 11)))
    job_id = upload(engine, owner, make_table(), data, chunk=7)
    start = len(data) if offset == "end" else offset % len(data)
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        assert b"".join(stream_chunks(driver, job_id, start)) == data[start:]


def test_a_child_process_reads_the_same_batches_as_a_thread(engine, owner, make_table, monkeypatch):
    table = make_table()
    lines = [good(i) if i % 7 else f"bad {i},nope,x,2020-02-30" for i in range(1, 5001)]
    data = csv_bytes(*lines)
    job_id = upload(engine, owner, table, data, chunk=4096)
    plan = plan_for(table)
    read = {}
    for mode, threshold in (("thread", 1 << 40), ("process", 0)):
        monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", threshold)
        reader = open_reader(engine, job_id, (0, 0), OPTIONS, plan, 700, len(data))
        try:
            read[mode] = signature(list(reader))
        finally:
            reader.close()
    assert read["thread"] == read["process"]
    assert sum(records for *_, records, _, _ in read["process"]) == 5000


def test_batches_grow_then_shrink_near_the_end_and_cover_every_line_once(engine, owner, make_table):
    table = make_table()
    data = csv_bytes(*map(good, range(1, 41_001)))
    job_id = upload(engine, owner, table, data)
    plan = plan_for(table)
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        batches = list(produce_batches(driver, job_id, (0, 0), OPTIONS, plan, 8000, len(data)))
    sizes = [b.records for b in batches]
    assert sizes[:3] == [FIRST_BATCH_ROWS, 2 * FIRST_BATCH_ROWS, 4 * FIRST_BATCH_ROWS]
    assert max(sizes) == 8000
    # The last batch, loaded after reading ends, is short; without shrinking it would be 1500.
    assert sizes[-1] <= FIRST_BATCH_ROWS
    assert sizes[-3] < 8000
    assert [line for b in batches for line in b.lines] == list(range(2, 41_002))


def test_closing_a_reader_mid_file_ends_its_child(engine, owner, make_table, monkeypatch):
    monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", 0)
    table = make_table()
    data = csv_bytes(*map(good, range(1, 50_001)))
    job_id = upload(engine, owner, table, data)
    reader = open_reader(engine, job_id, (0, 0), OPTIONS, plan_for(table), 500, len(data))
    first = next(iter(reader))
    reader.close()
    assert first.records == 500
    child = reader._process  # type: ignore[attr-defined]
    assert not child.is_alive()
    assert child.exitcode is not None


def test_a_reader_child_killed_mid_file_is_reported_not_waited_for(
    engine, owner, make_table, monkeypatch
):
    monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", 0)
    table = make_table()
    data = csv_bytes(*map(good, range(1, 50_001)))
    job_id = upload(engine, owner, table, data)
    reader = open_reader(engine, job_id, (0, 0), OPTIONS, plan_for(table), 500, len(data))
    try:
        os.kill(reader._process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match=r"reader process ended \(exit code -9\)"):
            for _ in reader:
                pass
    finally:
        reader.close()


def test_a_reader_child_stops_by_itself_when_its_reader_goes_away(engine, owner, make_table):
    # The worker process dies alone (say, the OOM killer): its end of the pipe closes, and the
    # child, which would otherwise read the whole file for nobody, stops at its next batch.
    table = make_table()
    rows = 200_000
    data = csv_bytes(*map(good, range(1, rows + 1)))
    job_id = upload(engine, owner, table, data)
    context = import_reader._context()
    receive, send = context.Pipe(duplex=False)
    # One-row batches: reading on to the end would take this child several seconds.
    args = (job_id, (0, 0), OPTIONS, plan_for(table), 1, len(data))
    child = context.Process(
        target=import_reader._read_in_child,
        args=(import_reader._connect_params(engine), args, send),
        daemon=True,
    )
    child.start()
    send.close()
    try:
        assert receive.poll(30)  # the first batch is on its way
        receive.close()
        child.join(timeout=2)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


def test_a_slow_read_of_the_upload_outlives_a_statement_timeout(engine, owner, make_table):
    # Managed databases often set statement_timeout per role: reading a long upload must not
    # be one statement that lasts as long as the import.
    data = csv_bytes(*map(good, range(1, 150_001)))  # 7 MiB: more than the socket buffers
    job_id = upload(engine, owner, make_table(), data)
    params = import_reader._connect_params(engine)
    with psycopg.connect(autocommit=True, options="-c statement_timeout=200", **params) as conn:
        read = []
        for piece in stream_chunks(conn, job_id, 0):
            read.append(piece)
            time.sleep(0.1)  # a loader busy with the batch before: the read takes ~0.7 s
    assert b"".join(read) == data


def test_a_receiver_that_fails_is_an_error_for_the_loader_not_a_hang(
    engine, owner, make_table, monkeypatch
):
    monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", 0)

    def broken(_data: bytes) -> object:
        raise MemoryError  # say, a batch too big to unpickle

    monkeypatch.setattr(
        import_reader,
        "pickle",
        types.SimpleNamespace(loads=broken, dumps=pickle.dumps, HIGHEST_PROTOCOL=5),
    )
    table = make_table()
    data = csv_bytes(*map(good, range(1, 2001)))
    job_id = upload(engine, owner, table, data)
    reader = open_reader(engine, job_id, (0, 0), OPTIONS, plan_for(table), 500, len(data))
    try:
        with pytest.raises(RuntimeError, match="reading the upload failed: MemoryError"):
            list(reader)
    finally:
        reader.close()


def test_without_a_process_server_the_upload_is_read_in_a_thread(
    engine, owner, make_table, monkeypatch
):
    def no_server(*_args: object) -> None:
        raise EOFError  # the forkserver died mid-handshake

    monkeypatch.setattr(import_reader, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(import_reader, "_ProcessReader", no_server)
    table = make_table()
    data = csv_bytes(*map(good, range(1, 2001)))
    job_id = upload(engine, owner, table, data)
    reader = open_reader(engine, job_id, (0, 0), OPTIONS, plan_for(table), 500, len(data))
    try:
        assert sum(batch.records for batch in reader) == 2000
    finally:
        reader.close()


def test_chunks_deleted_while_being_read_are_an_error_not_an_early_end(engine, owner, make_table):
    # The job's user deleted, or the job ended by another worker: the read stops with an
    # error, where a silent end of file would cut the last record short and load it.
    data = csv_bytes(*map(good, range(1, 301)))
    job_id = upload(engine, owner, make_table(), data, chunk=1000)
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        pieces = stream_chunks(driver, job_id, 0, len(data))
        first = next(pieces)
        with engine.begin() as other:
            other.execute(delete(upload_chunks).where(upload_chunks.c.job_id == job_id))
        with pytest.raises(RuntimeError, match=f"ends at byte {len(first)} of {len(data)}"):
            list(pieces)
