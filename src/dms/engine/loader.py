"""The database side of an import: stream the upload's chunks, COPY batches, find duplicates.

Unique columns: before a batch is copied, one query per unique column finds the batch's rows
whose value (compared as the column's type; NULLs never collide) is already in the table or
appears on an earlier line of the batch. Earlier batches are already in the table, so that also
catches duplicates across batches. Anything PostgreSQL still refuses during COPY (a concurrent
writer's duplicate, a value a converter let through) is isolated by bisecting the batch under
savepoints, so one bad row never fails a job.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import ARRAY

from dms.engine.catalog import TableDef
from dms.engine.ddl import unique_name
from dms.engine.import_plan import NULL, VALUE_CHARS, Batch, ErrorRow, ImportPlan
from dms.tables import import_errors, upload_chunks

__all__ = ["Loader", "Prefetch", "stream_chunks"]

CHUNKS_PER_QUERY = 4
_DUPLICATE = "duplicate value for unique column {}"


def stream_chunks(engine: Engine, job_id: str, offset: int) -> Iterator[bytes]:
    """Return the upload's bytes from `offset` on, a few chunks per query (memory stays flat)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        first = conn.execute(
            select(upload_chunks.c.seq, upload_chunks.c.start_offset)
            .where(upload_chunks.c.job_id == job_id, upload_chunks.c.start_offset <= offset)
            .order_by(upload_chunks.c.seq.desc())
            .limit(1)
        ).first()
        if first is None:
            return
        seq, skip = first.seq, offset - first.start_offset
        while True:
            rows = conn.execute(
                select(upload_chunks.c.seq, upload_chunks.c.data)
                .where(upload_chunks.c.job_id == job_id, upload_chunks.c.seq >= seq)
                .order_by(upload_chunks.c.seq)
                .limit(CHUNKS_PER_QUERY)
            ).all()
            for row in rows:
                data = bytes(row.data)
                yield data[skip:] if skip else data
                skip = 0
            if len(rows) < CHUNKS_PER_QUERY:
                return
            seq = rows[-1].seq + 1


class Loader:
    """COPY batches and error rows over one SQLAlchemy connection (the caller's transaction)."""

    def __init__(self, conn: Connection, table: TableDef, plan: ImportPlan, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id
        self.names = plan.names
        target = sql.Identifier(table.pg_schema, table.name)
        if plan.names:
            columns = sql.SQL(", ").join(map(sql.Identifier, plan.names))
            self.copy_sql: sql.Composable = sql.SQL("COPY {} ({}) FROM STDIN").format(
                target, columns
            )
        else:  # no field is loaded: every column takes its default
            self.copy_sql = sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, %s)").format(
                target
            )
        self.errors_sql = sql.SQL(
            "COPY {} (job_id, line, column_name, value, message) FROM STDIN"
        ).format(sql.Identifier(import_errors.name))
        self.probes = [(name, _probe(table.table, name)) for name in plan.unique]
        self.constraints = {unique_name(table.id, c.name): c.name for c in table.columns}

    def load(self, batch: Batch) -> tuple[int, list[ErrorRow]]:
        """Insert the batch's good rows; return (rows inserted, rows refused here as errors)."""
        rows, lines, keys = batch.rows, batch.lines, batch.keys
        errors: list[ErrorRow] = []
        if self.probes and rows:
            found = self._duplicates(keys)
            if found:
                for i in sorted(found):
                    name, value = found[i]
                    errors.append(ErrorRow(lines[i], name, value, _DUPLICATE.format(name)))
                keep = [i for i in range(len(rows)) if i not in found]
                rows = [rows[i] for i in keep]
                lines = [lines[i] for i in keep]
        return self._insert(rows, lines, errors), errors

    def write_errors(self, errors: list[ErrorRow], conn: Connection | None = None) -> None:
        """Store error rows in dms_import_errors (in `conn`'s transaction, default ours)."""
        if not errors:
            return
        driver = _driver(conn or self.conn)
        with driver.cursor() as cur, cur.copy(self.errors_sql) as copy:
            for error in errors:
                copy.write_row((self.job_id, *error))

    def _duplicates(self, keys: list[list[str | None]]) -> dict[int, tuple[str, str]]:
        """Return row index -> (column, value) for rows whose unique value is taken."""
        found: dict[int, tuple[str, str]] = {}
        for (name, probe), values in zip(self.probes, keys, strict=True):
            # Same text, same value: an earlier line of the batch has it. (Equal values spelt
            # differently, 10 and 010, reach COPY, which refuses them; bisection reports them.)
            seen: set[str] = set()
            for i, value in enumerate(values):
                if value is not None:
                    if value in seen:
                        found.setdefault(i, (name, value[:VALUE_CHARS]))
                    seen.add(value)
            for position in self.conn.execute(probe, {"vals": values}).scalars():
                i = position - 1  # ordinality counts from 1
                found.setdefault(i, (name, (values[i] or "")[:VALUE_CHARS]))
        return found

    def _insert(self, rows: list[str], lines: list[int], errors: list[ErrorRow]) -> int:
        """COPY `rows` under a savepoint; bisect to isolate rows PostgreSQL refuses."""
        if not rows:
            return 0
        try:
            with self.conn.begin_nested():
                self._copy(rows)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            if len(rows) == 1:
                errors.append(self._refusal(lines[0], rows[0], exc))
                return 0
            half = len(rows) // 2
            return self._insert(rows[:half], lines[:half], errors) + self._insert(
                rows[half:], lines[half:], errors
            )
        return len(rows)

    def _copy(self, rows: list[str]) -> None:
        driver = _driver(self.conn)
        with driver.cursor() as cur:
            if not self.names:
                cur.execute(self.copy_sql, (len(rows),))
                return
            with cur.copy(self.copy_sql) as copy:
                copy.write("\n".join(rows) + "\n")

    def _refusal(self, line: int, row: str, exc: psycopg.Error) -> ErrorRow:
        diag = exc.diag
        column = diag.column_name
        if isinstance(exc, psycopg.errors.UniqueViolation) and diag.constraint_name in (
            self.constraints
        ):
            column = self.constraints[diag.constraint_name]
            message = _DUPLICATE.format(column)
        elif isinstance(exc, psycopg.errors.NotNullViolation):
            message = "required: the column is not null and has no default"
        else:
            message = diag.message_primary or "refused by the database"
        value = None
        if column in self.names:
            text = row.split("\t")[self.names.index(column)]
            value = None if text == NULL else text[:VALUE_CHARS]
        return ErrorRow(line, column if column in self.names else None, value, message)


def _probe(table: sa.Table, name: str) -> sa.Select[Any]:
    """Return the query: 1-based positions in :vals of values already in the column."""
    column = table.c[name]
    vals = sa.bindparam("vals", type_=ARRAY(sa.Text))
    given = sa.func.unnest(vals).table_valued("v", with_ordinality="i").render_derived(name="u")
    # LATERAL … LIMIT 1 keeps the plan a loop of unique-index probes: a hash join would scan
    # the whole table for every batch. Compared as the column's type (NULL never matches).
    hit = (
        select(sa.literal(1).label("one"))
        .where(column == sa.cast(given.c.v, column.type))
        .limit(1)
        .lateral("hit")
    )
    return select(given.c.i).select_from(given.join(hit, sa.true()))


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    return conn.connection.driver_connection  # type: ignore[return-value]


_END = object()


class Prefetch:
    """Run a batch iterator in a thread, one or two batches ahead of the loader."""

    def __init__(self, produce: Callable[[], Iterator[Batch]], depth: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(produce,), name="dms-import-reader", daemon=True
        )
        self._thread.start()

    def _run(self, produce: Callable[[], Iterator[Batch]]) -> None:
        try:
            batches = produce()
            try:
                for batch in batches:
                    if not self._put(batch):
                        return
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failure(exc))

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the thread and wait for it (it closes its own connection)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
