"""The read query language of SPEC §3 Records, compiled to SQLAlchemy Core selects.

`filters` and `search` become the WHERE clause, `sort_by`/`order` the ORDER BY (always ending in
the unique `id`), `fields` the columns, `limit`/`offset`/`cursor` the page. Every value goes
through its column type's `from_json` and is bound as a parameter; names from the request only
ever pick `Column` objects of the given `Table`.

A read's statements depend on its *shape* alone (which columns, operators, sort keys, count
mode…), never on its values, so they are built once per table version and shape and kept; each
request only checks and converts its values and passes them as the statements' parameters
(`CompiledRead.values`). SQLAlchemy's compiled cache then hits without hashing a new tree.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dms.engine import cursor as cursors
from dms.engine.filters import MAX_DEPTH, MAX_TERMS, Columns, build, unknown_column, walk
from dms.engine.identifiers import name_of
from dms.engine.read_params import ReadParams, parse_read_params
from dms.engine.types import TYPES, ColumnType

__all__ = [
    "MAX_DEPTH",
    "MAX_TERMS",
    "CompiledRead",
    "ReadParams",
    "compile_read",
    "compile_where",
    "estimated_count",
    "next_cursor",
    "parse_read_params",
]

_ID_TYPE = TYPES.build("bigint")
MAX_CACHED_SHAPES = 2048


@dataclass(frozen=True)
class CompiledRead:
    """A compiled read: the page and count selects, their parameters, and the cursor material.

    Execute the statements with `values`: `conn.execute(read.select, read.values)`.
    """

    select: sa.Select[Any]  # fetches limit + 1 rows; may carry sort columns beyond `columns`
    count: sa.Select[Any] | None  # None unless count == "exact"
    where: ColumnElement[bool] | None  # filters + search, without the cursor's keyset
    columns: list[str]  # output columns, "id" first
    order_keys: list[tuple[str, bool]]  # (column, descending), ending with "id"
    estimate: sa.Select[Any] | None = None  # every matching row, for estimated_count
    fingerprint: str = field(default="", repr=False)
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)
    explain: Any = field(default=None, repr=False)  # EXPLAIN of `estimate`, for estimated_count


@dataclass(frozen=True)
class _Statements:
    select: sa.Select[Any]
    count: sa.Select[Any] | None
    estimate: sa.Select[Any] | None
    where: ColumnElement[bool] | None
    explain: Any = None  # EXPLAIN of `estimate`, built once like the rest


class _ShapeCache:
    """Statements by (table, shape); a table's new version is a new Table, so a new key."""

    def __init__(self, max_entries: int = MAX_CACHED_SHAPES) -> None:
        self.max_entries = max_entries
        self._statements: dict[tuple[Any, ...], _Statements] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Statements | None:
        return self._statements.get(key)

    def put(self, key: tuple[Any, ...], statements: _Statements) -> None:
        with self._lock:
            if len(self._statements) >= self.max_entries:
                self._statements.clear()  # rare; a shape is rebuilt in well under a millisecond
            self._statements[key] = statements


_SHAPES = _ShapeCache()


def compile_read(
    table: sa.Table, types: Mapping[str, ColumnType], params: ReadParams, *, cursor_key: bytes
) -> CompiledRead:
    """Return the page select, the count select and the cursor material for `params`."""
    if not cursor_key:
        raise ValueError("cursor_key must not be empty")
    columns = _columns(table, types)
    where_shape, where_values = walk(columns, params.filters, params.search)
    names = _fields(columns, params.fields)
    order_keys = cursors.order_keys(
        {name: kind for name, (_, kind) in columns.items()}, params.sort_by, params.order
    )
    fingerprint = cursors.fingerprint(
        table.fullname,
        [(name, desc, columns[name][1].spec) for name, desc in order_keys],
        params.filters or None,
        params.search or None,
    )
    values: dict[str, Any] = {f"v{i}": value for i, value in enumerate(where_values)}
    values["limit"] = params.limit + 1  # the extra row tells the caller a next page exists
    after = None
    if params.cursor is not None:
        after = cursors.decode_cursor(params.cursor, fingerprint, len(order_keys), cursor_key)
        values.update((f"k{i}", value) for i, value in enumerate(after))
    if params.offset:
        values["offset"] = params.offset
    key = (
        table,
        where_shape,
        tuple(names),
        tuple(order_keys),
        None if after is None else tuple(value is None for value in after),
        bool(params.offset),
        params.count,
    )
    statements = _SHAPES.get(key)
    if statements is None:
        statements = _build(table, columns, key, after)
        _SHAPES.put(key, statements)
    return CompiledRead(
        statements.select,
        statements.count,
        statements.where,
        names,
        order_keys,
        statements.estimate,
        fingerprint,
        values,
        statements.explain,
    )


def _build(
    table: sa.Table, columns: Columns, key: tuple[Any, ...], after: list[object] | None
) -> _Statements:
    """Return the statements of one read shape, every value a required named parameter."""
    _, where_shape, names, order_keys, _, has_offset, count_mode = key
    where = None if where_shape is None else build(columns, where_shape, _placeholder)
    # Sort columns left out by `fields` are still selected: next_cursor reads them.
    extra = [name for name, _ in order_keys if name not in names]
    select = sa.select(*(columns[name][0] for name in (*names, *extra)))
    condition = where
    if after is not None:
        keyset = cursors.keyset_predicate(
            [
                (columns[name][0], desc, value)
                for (name, desc), value in zip(order_keys, after, strict=True)
            ],
            bind=lambda i, column: sa.bindparam(f"k{i}", type_=column.type, required=True),
        )
        condition = keyset if where is None else sa.and_(where, keyset)
    if condition is not None:
        select = select.where(condition)
    select = select.order_by(
        *(columns[name][0].desc() if desc else columns[name][0].asc() for name, desc in order_keys)
    ).limit(sa.bindparam("limit", type_=sa.Integer, required=True))
    if has_offset:  # a bigint: an offset of 2**40 is fine
        select = select.offset(sa.bindparam("offset", type_=sa.BigInteger, required=True))
    count = estimate = None
    if count_mode == "exact":
        count = sa.select(sa.func.count()).select_from(table)
    elif count_mode == "estimated":
        estimate = sa.select(table.c["id"])
    if where is not None:
        count = None if count is None else count.where(where)
        estimate = None if estimate is None else estimate.where(where)
    return _Statements(
        select, count, estimate, where, None if estimate is None else cursors.explain(estimate)
    )


def _placeholder(index: int, sql_type: Any, expanding: bool) -> ColumnElement[Any]:
    return sa.bindparam(f"v{index}", type_=sql_type, expanding=expanding, required=True)


def next_cursor(compiled: CompiledRead, last_row: Mapping[str, Any], *, cursor_key: bytes) -> str:
    """Return the signed keyset cursor for the page after the one ending with `last_row`."""
    if not cursor_key:
        raise ValueError("cursor_key must not be empty")
    values = [last_row[name] for name, _ in compiled.order_keys]
    return cursors.encode_cursor(compiled.fingerprint, values, cursor_key)


def estimated_count(conn: Connection, read: CompiledRead | sa.Select[Any]) -> int:
    """Return the planner's estimate of all rows a read matches, like PostgREST's planned count."""
    if isinstance(read, sa.Select):
        return cursors.planned_rows(conn, read)  # LIMIT/OFFSET/ORDER BY are ignored
    if read.explain is not None:
        return cursors.planned_rows(conn, read.explain, read.values)
    select = read.estimate
    if select is None:  # compiled for another count mode: rebuild it without the keyset
        select = sa.select(sa.literal(1)).select_from(read.select.get_final_froms()[0])
        select = select if read.where is None else select.where(read.where)
    return cursors.planned_rows(conn, select, read.values)


def compile_where(
    table: sa.Table, types: Mapping[str, ColumnType], filters: object, search: object
) -> ColumnElement[bool] | None:
    """Return the WHERE clause for `filters` and `search`, values bound in it; None for none."""
    columns = _columns(table, types)
    shape, values = walk(columns, filters, search)
    if shape is None:
        return None

    def literal(index: int, sql_type: Any, expanding: bool) -> ColumnElement[Any]:
        if expanding:
            return sa.bindparam(None, values[index], type_=sql_type, expanding=True)
        # An explicit bind: SQLAlchemy would otherwise treat True/False as SQL constants.
        return sa.literal(values[index], sql_type)

    return build(columns, shape, literal)


# --- names ------------------------------------------------------------------------------


def _columns(table: sa.Table, types: Mapping[str, ColumnType]) -> Columns:
    """Return name -> (Column, ColumnType) for the table, "id" first."""
    found: Columns = {"id": (table.c["id"], _ID_TYPE)}
    for column in table.c:
        if column.name != "id":
            found[column.name] = (column, types[column.name])
    return found


def _fields(columns: Columns, fields: str | None) -> list[str]:
    if not fields:
        return list(columns)
    chosen = {"id": None}  # a dict keeps first-seen order and drops duplicates
    for item in fields.split(","):
        name = name_of(item.strip())
        if name not in columns:
            raise unknown_column("fields", item)
        chosen[name] = None
    return list(chosen)
