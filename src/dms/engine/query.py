"""The read query language of SPEC §3 Records, compiled to SQLAlchemy Core selects.

`filters` and `search` become the WHERE clause, `sort_by`/`order` the ORDER BY (always ending in
the unique `id`), `fields` the columns, `limit`/`offset`/`cursor` the page. Every value goes
through its column type's `from_json` and is bound as a parameter; names from the request only
ever pick `Column` objects of the given `Table`, so the statement text depends on the query's
structure alone and SQLAlchemy's compiled cache serves repeated shapes.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dms.engine import cursor as cursors
from dms.engine.errors import ConversionError, InvalidRequest, LimitExceeded, ValidationFailed
from dms.engine.read_params import ReadParams, bad_param, parse_read_params
from dms.engine.types import TYPES, ColumnType

__all__ = [
    "CompiledRead",
    "ReadParams",
    "compile_read",
    "compile_where",
    "estimated_count",
    "next_cursor",
    "parse_read_params",
]

MAX_DEPTH = 8
MAX_TERMS = 200
_COMPARISONS = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
# operator -> (pattern prefix, pattern suffix, case-insensitive)
_LIKES = {
    "contains": ("%", "%", False),
    "icontains": ("%", "%", True),
    "startswith": ("", "%", False),
    "endswith": ("%", "", False),
}
OPERATORS = ("eq", "ne", *_COMPARISONS, "in", "nin", *_LIKES, "isnull")
_ID_TYPE = TYPES.build("bigint")
_TEXT_TYPE = TYPES.build("text")

Columns = dict[str, tuple["sa.Column[Any]", ColumnType]]


@dataclass(frozen=True)
class CompiledRead:
    """A compiled read: the page and count selects, and what `next_cursor` needs."""

    select: sa.Select[Any]  # fetches limit + 1 rows; may carry sort columns beyond `columns`
    count: sa.Select[Any] | None  # None unless count == "exact"
    where: ColumnElement[bool] | None  # filters + search, without the cursor's keyset
    columns: list[str]  # output columns, "id" first
    order_keys: list[tuple[str, bool]]  # (column, descending), ending with "id"
    estimate: sa.Select[Any] | None = None  # every matching row, for estimated_count
    fingerprint: str = field(default="", repr=False)


def compile_read(
    table: sa.Table, types: Mapping[str, ColumnType], params: ReadParams, *, cursor_key: bytes
) -> CompiledRead:
    """Return the page select, the count select and the cursor material for `params`."""
    if not cursor_key:
        raise ValueError("cursor_key must not be empty")
    columns = _columns(table, types)
    where = _where(columns, params.filters, params.search)
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
    # Sort columns left out by `fields` are still selected: next_cursor reads them.
    extra = [name for name, _ in order_keys if name not in names]
    select = sa.select(*(columns[name][0] for name in names + extra))
    condition = where
    if params.cursor is not None:
        values = cursors.decode_cursor(params.cursor, fingerprint, len(order_keys), cursor_key)
        keyset = cursors.keyset_predicate(
            [
                (columns[name][0], desc, value)
                for (name, desc), value in zip(order_keys, values, strict=True)
            ]
        )
        condition = keyset if where is None else sa.and_(where, keyset)
    if condition is not None:
        select = select.where(condition)
    select = select.order_by(
        *(columns[name][0].desc() if desc else columns[name][0].asc() for name, desc in order_keys)
    ).limit(params.limit + 1)  # the extra row tells the caller whether a next page exists
    if params.offset:
        select = select.offset(sa.literal(params.offset, sa.BigInteger))  # not int4: 2**40 is fine
    count = estimate = None
    if params.count == "exact":
        count = sa.select(sa.func.count()).select_from(table)
    elif params.count == "estimated":
        estimate = sa.select(table.c["id"])
    if where is not None:
        count = None if count is None else count.where(where)
        estimate = None if estimate is None else estimate.where(where)
    return CompiledRead(select, count, where, names, order_keys, estimate, fingerprint)


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
    select = read.estimate
    if select is None:  # compiled for another count mode: rebuild it without the keyset
        select = sa.select(sa.literal(1)).select_from(read.select.get_final_froms()[0])
        select = select if read.where is None else select.where(read.where)
    return cursors.planned_rows(conn, select)


def compile_where(
    table: sa.Table, types: Mapping[str, ColumnType], filters: object, search: object
) -> ColumnElement[bool] | None:
    """Return the WHERE clause for `filters` and `search`; None when neither restricts rows."""
    return _where(_columns(table, types), filters, search)


# --- names ------------------------------------------------------------------------------


def _columns(table: sa.Table, types: Mapping[str, ColumnType]) -> Columns:
    """Return name -> (Column, ColumnType) for the table, "id" first."""
    found: Columns = {"id": (table.c["id"], _ID_TYPE)}
    for column in table.c:
        if column.name != "id":
            found[column.name] = (column, types[column.name])
    return found


def _name(key: object) -> str:
    # Names are case-insensitive (SPEC §2); lower() only on ASCII, as the validator does.
    text = key if isinstance(key, str) else str(key)
    return text.lower() if text.isascii() else text


def _show(key: object) -> str:
    return repr(str(key)[:64])


def _unknown(param: str, key: object) -> InvalidRequest:
    return InvalidRequest(
        f"unknown column {_show(key)} in {param}", errors={param: [f"unknown column {_show(key)}"]}
    )


def _fields(columns: Columns, fields: str | None) -> list[str]:
    if not fields:
        return list(columns)
    chosen = {"id": None}  # a dict keeps first-seen order and drops duplicates
    for item in fields.split(","):
        name = _name(item.strip())
        if name not in columns:
            raise _unknown("fields", item)
        chosen[name] = None
    return list(chosen)


# --- WHERE --------------------------------------------------------------------------------


def _where(columns: Columns, filters: object, search: object) -> ColumnElement[bool] | None:
    if filters is not None and not isinstance(filters, dict):
        raise bad_param("filters", "must be a JSON object")
    clauses = []
    if filters:
        clauses.append(_Filters(columns).group(filters, 1))
    searched = _search(columns, search)
    if searched is not None:
        clauses.append(searched)
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else sa.and_(*clauses)


class _Filters:
    """One walk over a filter tree that counts terms, so oversized input fails before it is read."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.terms = 0

    def group(self, node: object, depth: int) -> ColumnElement[bool]:
        # Checked before descending: recursion never goes deeper than MAX_DEPTH + 1 frames.
        if depth > MAX_DEPTH:
            raise LimitExceeded(
                f"filters are nested more than {MAX_DEPTH} deep",
                errors={"filters": [f"at most {MAX_DEPTH} levels of nesting"]},
            )
        if not isinstance(node, dict) or not node:
            raise bad_param("filters", "each item of an and/or list must be a non-empty object")
        clauses: list[ColumnElement[bool]] = []
        for key, value in node.items():
            name = _name(key)
            if name in ("and", "or"):
                clauses.append(self.combine(name, value, depth))
            else:
                clauses.extend(self.column(key, name, value))
        return clauses[0] if len(clauses) == 1 else sa.and_(*clauses)

    def combine(self, name: str, items: object, depth: int) -> ColumnElement[bool]:
        if not isinstance(items, list) or not items:
            raise bad_param("filters", f"{name} needs a non-empty list of filter objects")
        self.check(len(items))  # every item holds at least one term
        parts = [self.group(item, depth + 1) for item in items]
        return sa.and_(*parts) if name == "and" else sa.or_(*parts)

    def column(self, key: object, name: str, value: object) -> list[ColumnElement[bool]]:
        entry = self.columns.get(name)
        if entry is None:
            raise _unknown("filters", key)
        if not isinstance(value, dict):
            return [self.term(entry, name, "eq", value)]
        if not value:
            raise bad_param(name, "needs at least one operator")
        self.check(len(value))
        return [self.term(entry, name, op, operand) for op, operand in value.items()]

    def check(self, more: int) -> None:
        if self.terms + more > MAX_TERMS:
            raise LimitExceeded(
                f"filters have more than {MAX_TERMS} terms",
                errors={"filters": [f"at most {MAX_TERMS} terms (each in/nin item counts)"]},
            )

    def term(
        self, entry: tuple[sa.Column[Any], ColumnType], name: str, op_key: object, value: object
    ) -> ColumnElement[bool]:
        column, column_type = entry
        op = _name(op_key)
        self.check(1)
        self.terms += 1
        if op == "eq":
            return (
                column.is_(None)
                if value is None
                else column == _bound(column, column_type, name, value)
            )
        if op == "ne":
            if value is None:
                return column.is_not(None)
            converted = _bound(column, column_type, name, value)
            return column.is_distinct_from(converted) if column.nullable else column != converted
        if op in _COMPARISONS:
            if not column_type.orderable:
                raise bad_param(name, f"{op} does not apply to type {column_type.spec}")
            return _COMPARISONS[op](column, _bound(column, column_type, name, value))
        if op in ("in", "nin"):
            if not isinstance(value, list) or not value:
                raise bad_param(name, f"{op} needs a non-empty list")
            self.check(len(value) - 1)
            self.terms += len(value) - 1
            # One expanding parameter typed like the column: every item is bound as that type
            # (jsonb = jsonb, not jsonb = integer), and the statement text does not depend on
            # how many items there are.
            items = [_convert(column_type, name, item) for item in value]
            values = sa.bindparam(None, items, type_=column.type, expanding=True)
            if op == "in":
                return column.in_(values)
            outside = column.not_in(values)
            return sa.or_(column.is_(None), outside) if column.nullable else outside
        if op in _LIKES:
            if not column_type.searchable:
                raise bad_param(name, f"{op} needs a text column, not {column_type.spec}")
            prefix, suffix, insensitive = _LIKES[op]
            pattern = prefix + _escape_like(_text(name, value)) + suffix
            if insensitive:
                return column.ilike(pattern, escape="\\")
            return column.like(pattern, escape="\\")
        if op == "isnull":
            if type(value) is not bool:
                raise bad_param(name, "isnull needs true or false")
            return column.is_(None) if value else column.is_not(None)
        raise bad_param(name, f"unknown operator {_show(op)}; operators: {', '.join(OPERATORS)}")


def _convert(column_type: ColumnType, name: str, value: object) -> Any:
    if value is None:
        raise ValidationFailed(
            f"invalid filter value for {name}", errors={name: ["null only works with eq/ne"]}
        )
    try:
        return column_type.from_json(value)
    except ConversionError as exc:
        raise ValidationFailed(
            f"invalid filter value for {name}", errors={name: [str(exc)]}
        ) from None


def _bound(
    column: sa.Column[Any], column_type: ColumnType, name: str, value: object
) -> ColumnElement[Any]:
    # An explicit bind: SQLAlchemy would otherwise treat True/False as SQL constants.
    return sa.literal(_convert(column_type, name, value), column.type)


def _text(name: str, value: object) -> str:
    try:
        return str(_TEXT_TYPE.from_json(value))
    except ConversionError as exc:
        raise ValidationFailed(f"invalid value for {name}", errors={name: [str(exc)]}) from None


def _escape_like(text: str) -> str:
    # Backslash is the ESCAPE character, so it is doubled first.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search(columns: Columns, search: object) -> ColumnElement[bool] | None:
    if search is None:
        return None
    if isinstance(search, dict):
        parts = []
        for key, value in search.items():
            name = _name(key)
            entry = columns.get(name)
            if entry is None:
                raise _unknown("search", key)
            column, column_type = entry
            if not column_type.searchable:
                raise bad_param(
                    "search", f"column {name!r} is not a text column ({column_type.spec})"
                )
            pattern = "%" + _escape_like(_text(name, value)) + "%"
            parts.append(column.ilike(pattern, escape="\\"))
        return sa.or_(*parts) if parts else None
    text = search if isinstance(search, str) else orjson.dumps(search, default=str).decode()
    if not text:
        return None
    pattern = "%" + _escape_like(_text("search", text)) + "%"
    parts = [
        column.ilike(pattern, escape="\\") for column, kind in columns.values() if kind.searchable
    ]
    # No text column to search: nothing can match, which is an answer, not an error.
    return sa.or_(*parts) if parts else sa.false()
