"""The database side of an import: COPY batches, reject duplicates, store error rows.

Unique columns: rows repeating the text of an earlier line of their batch are rejected in
Python. The batch is then COPYed straight into the table; if PostgreSQL reports a unique
violation, the batch is rolled back to its savepoint and one query per unique column finds the
rows whose value (compared as the column's type; NULLs never collide) is already in the table
(earlier batches included), and the rest is COPYed. A few batches after a conflict are probed
first. Whatever PostgreSQL still refuses (a concurrent writer's duplicate, a value a converter
let through) is isolated by bisecting the batch under savepoints: one bad row never fails a job.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import ARRAY

from dms.engine.catalog import TableDef
from dms.engine.ddl import unique_name
from dms.engine.import_plan import NULL, VALUE_CHARS, Batch, ErrorRow, ImportPlan
from dms.tables import import_errors

__all__ = ["Loader"]

_DUPLICATE = "duplicate value for unique column {}"
PROBE_AFTER_CONFLICT = 4
# What PostgreSQL refuses about a row's values: a bad value, a constraint, or a value past one
# of its limits (a unique or indexed text too long for a btree entry): each a row error.
_REFUSALS = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


class Loader:
    """COPY batches and error rows over one SQLAlchemy connection (the caller's transaction)."""

    def __init__(self, conn: Connection, table: TableDef, plan: ImportPlan, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id
        self.names = plan.names
        self.encoding = plan.copy_encoding
        target = sql.Identifier(table.pg_schema, table.name)
        if plan.names:
            columns = sql.SQL(", ").join(map(sql.Identifier, plan.names))
            self.copy_sql: sql.Composed = sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)
        else:  # no field is loaded: every column takes its default
            self.copy_sql = sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, %s)").format(
                target
            )
        self.errors_sql = sql.SQL(
            "COPY {} (job_id, line, column_name, value, message) FROM STDIN"
        ).format(sql.Identifier(import_errors.name))
        self.unique = plan.unique
        self.probes = [(name, _probe(table.table, name)) for name in plan.unique]
        self._probing = 0  # batches left to probe before trying COPY first again
        self.constraints = {unique_name(table.id, c.name): c.name for c in table.columns}

    def load(self, batch: Batch) -> tuple[int, list[ErrorRow]]:
        """Insert the batch's good rows; return (rows inserted, rows refused here as errors)."""
        data, lines, keys = batch.data, batch.lines, batch.keys
        errors: list[ErrorRow] = []
        if not self.probes or not lines:
            return self._insert(data, lines, errors), errors
        repeated = self._repeated(keys)
        if repeated:
            data, lines, keys = _drop(repeated, data, lines, keys, errors)
        if not lines:
            return 0, errors
        # Probing costs about as much as the COPY; most batches collide with nothing, so COPY
        # first and probe only after a conflict (and for the few batches after one).
        if self._probing:
            self._probing -= 1
        else:
            try:
                with self.conn.begin_nested():
                    self._copy(data, len(lines))
                return len(lines), errors
            except psycopg.errors.UniqueViolation:
                self._probing = PROBE_AFTER_CONFLICT
            except _REFUSALS:
                pass  # not a duplicate: bisection below finds the row
        taken = self._taken(keys)
        if taken:
            data, lines, keys = _drop(taken, data, lines, keys, errors)
        return self._insert(data, lines, errors), errors

    def write_errors(self, errors: list[ErrorRow], conn: Connection | None = None) -> None:
        """Store error rows in dms_import_errors (in `conn`'s transaction, default ours)."""
        if not errors:
            return
        driver = _driver(conn or self.conn)
        with driver.cursor() as cur, cur.copy(self.errors_sql) as copy:
            for error in errors:
                copy.write_row((self.job_id, *error))

    def _repeated(self, keys: list[list[str | None]]) -> dict[int, tuple[str, str]]:
        """Return row -> (column, value) for rows repeating an earlier row's text."""
        # Equal values spelt differently (10 and 010) reach COPY, which refuses them; the probe
        # (typed comparison) then rejects the later one.
        found: dict[int, tuple[str, str]] = {}
        for name, values in zip(self.unique, keys, strict=True):
            seen: set[str] = set()
            for i, value in enumerate(values):
                if value is not None:
                    if value in seen:
                        found.setdefault(i, (name, value[:VALUE_CHARS]))
                    seen.add(value)
        return found

    def _taken(self, keys: list[list[str | None]]) -> dict[int, tuple[str, str]]:
        """Return row -> (column, value) for rows whose value is already in the table."""
        found: dict[int, tuple[str, str]] = {}
        for (name, probe), values in zip(self.probes, keys, strict=True):
            for position in self.conn.execute(probe, {"vals": values}).scalars():
                i = position - 1  # ordinality counts from 1
                found.setdefault(i, (name, (values[i] or "")[:VALUE_CHARS]))
        return found

    def _insert(self, data: bytes, lines: list[int], errors: list[ErrorRow]) -> int:
        """COPY `data` under a savepoint; bisect to isolate rows PostgreSQL refuses."""
        if not lines:
            return 0
        try:
            with self.conn.begin_nested():
                self._copy(data, len(lines))
        except _REFUSALS as exc:
            rows = _split(data)
            if len(rows) == 1:
                errors.append(self._refusal(lines[0], rows[0], exc))
                return 0
            half = len(rows) // 2
            first = self._insert(b"".join(rows[:half]), lines[:half], errors)
            return first + self._insert(b"".join(rows[half:]), lines[half:], errors)
        return len(lines)

    def _copy(self, data: bytes, count: int) -> None:
        with _driver(self.conn).cursor() as cur:
            if not self.names:
                cur.execute(self.copy_sql, (count,))
                return
            with cur.copy(self.copy_sql) as copy:
                copy.write(data)

    def _refusal(self, line: int, row: bytes, exc: psycopg.Error) -> ErrorRow:
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
            text = row.decode(self.encoding).rstrip("\n").split("\t")[self.names.index(column)]
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


def _drop(
    found: dict[int, tuple[str, str]],
    data: bytes,
    lines: list[int],
    keys: list[list[str | None]],
    errors: list[ErrorRow],
) -> tuple[bytes, list[int], list[list[str | None]]]:
    """Report the `found` rows as duplicates and return the batch without them."""
    for i in sorted(found):
        name, value = found[i]
        errors.append(ErrorRow(lines[i], name, value, _DUPLICATE.format(name)))
    keep = [i for i in range(len(lines)) if i not in found]
    rows = _split(data)
    return (
        b"".join(rows[i] for i in keep),
        [lines[i] for i in keep],
        [[key[i] for i in keep] for key in keys],
    )


def _split(data: bytes) -> list[bytes]:
    """Return the rows of COPY text `data`, each with its newline (data never holds a raw one)."""
    return data.splitlines(keepends=True)


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    return conn.connection.driver_connection  # type: ignore[return-value]
