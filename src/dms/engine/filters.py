"""`filters` and `search` of the read query language, in two steps.

`walk` checks a request's filters and search (names, operators, depth, term count, every value
converted by its column's type) and returns their *shape* (what the WHERE clause looks like,
hashable, free of values) and the values it binds, in order. `build` turns a shape into
SQLAlchemy, asking `bind` for each value's placeholder. A shape built once with named bind
parameters serves every later request of the same shape (dms.engine.query caches it), so a read
pays for checking its values, not for building and hashing a statement tree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from dms.engine.errors import ConversionError, InvalidRequest, LimitExceeded, ValidationFailed
from dms.engine.identifiers import name_of
from dms.engine.read_params import bad_param
from dms.engine.types import TYPES, ColumnType

__all__ = ["MAX_DEPTH", "MAX_TERMS", "OPERATORS", "Bind", "Columns", "build", "walk"]

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
_TEXT_TYPE = TYPES.build("text")

Columns = dict[str, tuple["sa.Column[Any]", ColumnType]]
Shape = tuple[Any, ...]
# bind(index of the value, SQL type, expanding) -> the placeholder or literal for that value
Bind = Callable[[int, Any, bool], ColumnElement[Any]]


def walk(columns: Columns, filters: object, search: object) -> tuple[Shape | None, list[Any]]:
    """Return the shape of `filters` AND `search` (None: no condition) and the values it binds."""
    if filters is not None and not isinstance(filters, dict):
        raise bad_param("filters", "must be a JSON object")
    walker = _Walker(columns)
    parts = []
    if filters:
        parts.append(walker.group(filters, 1))
    searched = walker.search(search)
    if searched is not None:
        parts.append(searched)
    if not parts:
        return None, walker.values
    return (parts[0] if len(parts) == 1 else ("and", tuple(parts))), walker.values


def build(columns: Columns, shape: Shape, bind: Bind) -> ColumnElement[bool]:
    """Return the WHERE clause of `shape`, each value given by `bind`."""
    kind = shape[0]
    if kind in ("and", "or"):
        parts = [build(columns, part, bind) for part in shape[1]]
        return sa.and_(*parts) if kind == "and" else sa.or_(*parts)
    if kind == "false":
        return sa.false()
    if kind == "search":  # one pattern per column, or one for all: (names, value indexes)
        column_names, indexes = shape[1], shape[2]
        return sa.or_(
            *(
                columns[name][0].ilike(bind(i, sa.Text(), False), escape="\\")
                for name, i in zip(column_names, indexes, strict=True)
            )
        )
    column = columns[shape[1]][0]
    if kind == "null":
        return column.is_(None)
    if kind == "not_null":
        return column.is_not(None)
    value = bind(shape[2], column.type, kind in ("in", "nin"))
    if kind == "eq":
        return column == value
    if kind == "ne":
        return column.is_distinct_from(value) if column.nullable else column != value
    if kind in _COMPARISONS:
        return _COMPARISONS[kind](column, value)
    if kind == "in":
        return column.in_(value)
    if kind == "nin":
        outside = column.not_in(value)
        return sa.or_(column.is_(None), outside) if column.nullable else outside
    if kind == "ilike":
        return column.ilike(value, escape="\\")
    if kind == "like":
        return column.like(value, escape="\\")
    raise ValueError(f"unknown shape {kind!r}")


class _Walker:
    """One walk over a filter tree that counts terms, so oversized input fails before it is read."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.terms = 0
        self.values: list[Any] = []

    def value(self, value: Any) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def group(self, node: object, depth: int) -> Shape:
        # Checked before descending: recursion never goes deeper than MAX_DEPTH + 1 frames.
        if depth > MAX_DEPTH:
            raise LimitExceeded(
                f"filters are nested more than {MAX_DEPTH} deep",
                errors={"filters": [f"at most {MAX_DEPTH} levels of nesting"]},
            )
        if not isinstance(node, dict) or not node:
            raise bad_param("filters", "each item of an and/or list must be a non-empty object")
        parts: list[Shape] = []
        for key, value in node.items():
            name = name_of(key)
            if name in ("and", "or"):
                parts.append(self.combine(name, value, depth))
            else:
                parts.extend(self.column(key, name, value))
        return parts[0] if len(parts) == 1 else ("and", tuple(parts))

    def combine(self, name: str, items: object, depth: int) -> Shape:
        if not isinstance(items, list) or not items:
            raise bad_param("filters", f"{name} needs a non-empty list of filter objects")
        self.check(len(items))  # every item holds at least one term
        return (name, tuple(self.group(item, depth + 1) for item in items))

    def column(self, key: object, name: str, value: object) -> list[Shape]:
        entry = self.columns.get(name)
        if entry is None:
            raise unknown_column("filters", key)
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
    ) -> Shape:
        column_type = entry[1]
        op = name_of(op_key)
        self.check(1)
        self.terms += 1
        if op in ("eq", "ne"):
            if value is None:
                return ("null" if op == "eq" else "not_null", name)
            return (op, name, self.value(_convert(column_type, name, value)))
        if op in _COMPARISONS:
            if not column_type.orderable:
                raise bad_param(name, f"{op} does not apply to type {column_type.spec}")
            return (op, name, self.value(_convert(column_type, name, value)))
        if op in ("in", "nin"):
            if not isinstance(value, list) or not value:
                raise bad_param(name, f"{op} needs a non-empty list")
            self.check(len(value) - 1)
            self.terms += len(value) - 1
            # One expanding parameter typed like the column: every item is bound as that type
            # (jsonb = jsonb, not jsonb = integer), and the statement text does not depend on
            # how many items there are.
            items = [_convert(column_type, name, item) for item in value]
            return (op, name, self.value(items))
        if op in _LIKES:
            if not column_type.searchable:
                raise bad_param(name, f"{op} needs a text column, not {column_type.spec}")
            prefix, suffix, insensitive = _LIKES[op]
            pattern = prefix + _escape_like(_text(name, value)) + suffix
            return ("ilike" if insensitive else "like", name, self.value(pattern))
        if op == "isnull":
            if type(value) is not bool:
                raise bad_param(name, "isnull needs true or false")
            return ("null" if value else "not_null", name)
        raise bad_param(name, f"unknown operator {_show(op)}; operators: {', '.join(OPERATORS)}")

    def search(self, search: object) -> Shape | None:
        if search is None:
            return None
        if isinstance(search, dict):
            names, indexes = [], []
            for key, value in search.items():
                name = name_of(key)
                entry = self.columns.get(name)
                if entry is None:
                    raise unknown_column("search", key)
                if not entry[1].searchable:
                    raise bad_param(
                        "search", f"column {name!r} is not a text column ({entry[1].spec})"
                    )
                names.append(name)
                indexes.append(self.value("%" + _escape_like(_text(name, value)) + "%"))
            return ("search", tuple(names), tuple(indexes)) if names else None
        text = search if isinstance(search, str) else orjson.dumps(search, default=str).decode()
        if not text:
            return None
        names = [name for name, (_, kind) in self.columns.items() if kind.searchable]
        if not names:
            # No text column to search: nothing can match, which is an answer, not an error.
            return ("false",)
        index = self.value("%" + _escape_like(_text("search", text)) + "%")
        return ("search", tuple(names), (index,) * len(names))


def unknown_column(param: str, key: object) -> InvalidRequest:
    """Return the 400 error for a column `key` of request parameter `param` that is not there."""
    return InvalidRequest(
        f"unknown column {_show(key)} in {param}", errors={param: [f"unknown column {_show(key)}"]}
    )


def _show(key: object) -> str:
    return repr(str(key)[:64])


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


def _text(name: str, value: object) -> str:
    try:
        return str(_TEXT_TYPE.from_json(value))
    except ConversionError as exc:
        raise ValidationFailed(f"invalid value for {name}", errors={name: [str(exc)]}) from None


def _escape_like(text: str) -> str:
    # Backslash is the ESCAPE character, so it is doubled first.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
