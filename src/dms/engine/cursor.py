"""Ordering and pagination: sort keys, signed keyset cursors, the predicate "after a row", and
the planner's estimated count.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`; the payload is JSON
`[fingerprint, [value, …]]`. The fingerprint pins the token to one query shape (table, sort
keys with their column types, filters, search) so it cannot be replayed against another one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from dms.engine.errors import InvalidRequest
from dms.engine.types import ColumnType

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "fingerprint",
    "keyset_predicate",
    "explain",
    "order_keys",
    "planned_rows",
]

# (column, descending, last value) for each sort key, the id tiebreak last.
KeyValues = Sequence[tuple["sa.Column[Any]", bool, object]]

_SORT_KEY = re.compile(r"(-?)([A-Za-z_][A-Za-z0-9_]*)")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")
_VERSION = 1  # bump when the payload layout changes: old tokens then stop matching


def order_keys(
    types: Mapping[str, ColumnType], sort_by: str | None, order: str | None
) -> list[tuple[str, bool]]:
    """Return (column, descending) sort keys for `sort_by`/`order`, ending with the id tiebreak."""
    default_desc = order == "desc"
    keys: list[tuple[str, bool]] = []
    for item in sort_by.split(",") if sort_by else ():
        match = _SORT_KEY.fullmatch(item.strip())
        if match is None:
            raise InvalidRequest(
                "sort_by takes column names separated by commas, each optionally prefixed by -",
                errors={"sort_by": [f"{item[:64]!r} is not a column name"]},
            )
        name = match[2].lower()
        problem = None
        if name not in types:
            problem = f"unknown column {name!r}"
        elif not types[name].orderable:
            problem = f"cannot sort by {name!r}: type {types[name].spec} has no order"
        elif any(name == seen for seen, _ in keys):  # keys never outnumber the columns
            problem = f"column {name!r} is given twice"
        if problem:
            raise InvalidRequest(f"sort_by: {problem}", errors={"sort_by": [problem]})
        keys.append((name, bool(match[1]) or default_desc))
    names = [name for name, _ in keys]
    if "id" in names:  # id is unique: keys after it never decide anything
        return keys[: names.index("id") + 1]
    keys.append(("id", keys[-1][1] if keys else default_desc))
    return keys


def fingerprint(
    table_name: str, keys: Sequence[tuple[str, bool, str]], filters: object, search: object
) -> str:
    """Return a short digest of what a cursor depends on: table, (name, desc, type) keys, query."""
    material = [_VERSION, table_name, keys, filters, search]
    # sort_keys makes {"a":1,"b":2} and {"b":2,"a":1} one query; default=str never fires on
    # JSON-decoded input but keeps odd Python callers from crashing here.
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def encode_cursor(print_: str, values: Sequence[object], key: bytes) -> str:
    """Return the signed token for the sort `values` of a page's last row."""
    payload = orjson.dumps([print_, [_encode(value) for value in values]])
    signature = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(token: str, print_: str, count: int, key: bytes) -> list[object]:
    """Return the `count` sort values in `token`; InvalidRequest if forged or for another query."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        raise _invalid()
    body, _, signature = token.partition(".")
    payload = _unb64(body)
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(_unb64(signature), expected):
        raise _invalid()
    # Past the signature the payload is our own output, so shape errors mean a key or format
    # change between releases, not an attack; they still answer 400.
    try:
        found, raw = orjson.loads(payload)
        if found != print_:
            raise InvalidRequest(
                "cursor does not match this query",
                errors={"cursor": ["cursor does not match this query; start again without it"]},
            )
        if not isinstance(raw, list) or len(raw) != count:
            raise ValueError("wrong number of values")
        return [_decode(value) for value in raw]
    except (ValueError, TypeError, ArithmeticError):  # ArithmeticError: Decimal's errors
        raise _invalid() from None


def keyset_predicate(
    keys: KeyValues, bind: Callable[[int, sa.Column[Any]], ColumnElement[Any]]
) -> ColumnElement[bool]:
    """Return the condition "row sorts after these values" under ORDER BY with PG null order.

    The values decide the condition's shape (a NULL sorts apart); `bind(i, column)` gives the
    placeholder of the i-th value, so the statement serves any values of that shape.
    """

    def value_of(i: int) -> ColumnElement[Any]:
        return bind(i, keys[i][0])

    # PostgreSQL sorts NULL above every value: last ascending, first descending.
    nulls = any(column.nullable or value is None for column, _, value in keys)
    if not nulls and len({desc for _, desc, _ in keys}) == 1:
        # Row-value comparison: one index range scan on a matching composite index.
        left = sa.tuple_(*(column for column, _, _ in keys))
        right = sa.tuple_(*(value_of(i) for i in range(len(keys))))
        return left < right if keys[0][1] else left > right
    # (a after x) OR (a = x AND b after y) OR …: row values cannot mix directions or NULLs.
    disjuncts: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for i, (column, desc, value) in enumerate(keys):
        bound = None if value is None else value_of(i)
        after = _after(column, desc, bound)
        if after is not None:
            disjuncts.append(sa.and_(*equal, after) if equal else after)
        equal.append(column.is_(None) if bound is None else column == bound)
    predicate = sa.or_(*disjuncts)
    first_column, first_desc, first_value = keys[0]
    leading = _leading_bound(first_column, first_desc, None if first_value is None else value_of(0))
    # The redundant bound on the first key lets an index scan start at the cursor instead of
    # filtering every earlier row.
    return predicate if leading is None else sa.and_(leading, predicate)


def _after(
    column: sa.Column[Any], desc: bool, value: ColumnElement[Any] | None
) -> ColumnElement[bool] | None:
    """Return "column sorts strictly after value" (None: a NULL), None when nothing can."""
    if desc:
        return column.is_not(None) if value is None else column < value
    if value is None:
        return None
    greater = column > value
    return sa.or_(greater, column.is_(None)) if column.nullable else greater


def _leading_bound(
    column: sa.Column[Any], desc: bool, value: ColumnElement[Any] | None
) -> ColumnElement[bool] | None:
    if value is None:
        return None if desc else column.is_(None)
    if desc:
        return column <= value
    # Ascending on a nullable column would need "OR IS NULL", which no range scan can use.
    return None if column.nullable else column >= value


def explain(select: sa.Select[Any]) -> Executable:
    """Return EXPLAIN (FORMAT JSON) of `select` without LIMIT/OFFSET/ORDER BY, for planned_rows."""
    # LIMIT/OFFSET/ORDER BY are dropped so a page select estimates all matching rows too.
    return _Explain(select.limit(None).offset(None).order_by(None))


def planned_rows(
    conn: Connection,
    select: sa.Select[Any] | Executable,
    values: Mapping[str, Any] | None = None,
) -> int:
    """Return the planner's row estimate ("Plan Rows") for a select (or its `explain`), unrun."""
    statement = explain(select) if isinstance(select, sa.Select) else select
    plan = conn.execute(statement, dict(values or {})).scalar_one()
    if isinstance(plan, str | bytes):
        plan = orjson.loads(plan)
    return max(0, round(float(plan[0]["Plan"]["Plan Rows"])))


class _Explain(Executable, ClauseElement):
    """EXPLAIN (FORMAT JSON) of a statement, compiled with it so its parameters stay bound."""

    inherit_cache = True
    _traverse_internals = [("statement", InternalTraversal.dp_clauseelement)]

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement

    @property
    def _all_selected_columns(self) -> tuple[()]:
        # No Column objects to map result columns to: the plan is read by position.
        return ()


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def _invalid() -> InvalidRequest:
    return InvalidRequest("invalid cursor", errors={"cursor": ["invalid or tampered cursor"]})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:  # binascii.Error: a length no base64 text can have
        raise _invalid() from None


# JSON keeps None, bool, int and str as they are; the rest travels as [tag, text].
_DECODERS: dict[str, Callable[[str], object]] = {
    "f": float,
    "n": Decimal,
    "t": datetime.fromisoformat,
    "d": date.fromisoformat,
    "h": time.fromisoformat,
    "u": uuid.UUID,
}


def _encode(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return ["f", repr(value)]  # repr round-trips, and covers inf/nan that JSON cannot
    if isinstance(value, Decimal):
        return ["n", str(value)]
    if isinstance(value, datetime):  # before date: a datetime is a date
        return ["t", value.isoformat()]
    if isinstance(value, date):
        return ["d", value.isoformat()]
    if isinstance(value, time):
        return ["h", value.isoformat()]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _decode(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list) and len(value) == 2 and value[0] in _DECODERS:
        return _DECODERS[value[0]](value[1])
    raise ValueError("unknown cursor value")
