"""What steers the fuzzer into real code: the `fuzzed` table, its columns, values of every kind."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import strategies as st

TABLE = "fuzzed"
FIELDS = {
    "name": "varchar(40)",
    "qty": "integer index",
    "price": "numeric(10,2) default 0",
    "born": "date",
    "seen": "timestamptz",
    "flag": "boolean",
    "meta": "jsonb",
    "email": "email unique",
    "code": "uuid",
    "label": "text not null default 'x'",
}
COLUMNS = sorted(FIELDS)
SEED_ROWS = [
    {
        "name": f"row {i}",
        "qty": i,
        "price": f"{i}.5",
        "born": f"2020-01-{1 + i:02d}",
        "seen": f"2024-01-01T10:{i:02d}:00+00:00",
        "flag": i % 2 == 0,
        "meta": {"i": i, "tags": ["a", "b"]},
        "email": f"seed{i}@example.com",
        "code": f"00000000-0000-0000-0000-{i:012d}",
        "label": "=formula" if i == 3 else f"label {i}",
    }
    for i in range(12)
]
# Filled by the fixture once the app is up: the fuzzing user and one real import job.
KNOWN: dict[str, str] = {}

# JSON has no NaN or Infinity (the serializer would refuse them); they are sent as strings.
_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _FINITE | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_UTC = dt.UTC
# One valid value per column type, so that some writes succeed and reach the database.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=40),
    "qty": st.integers(-(2**31), 2**31 - 1),
    "price": st.decimals("-99999999.99", "99999999.99", places=2).map(str),
    "born": st.dates().map(dt.date.isoformat),
    "seen": st.datetimes(timezones=st.just(_UTC)).map(dt.datetime.isoformat),
    "flag": st.booleans(),
    "meta": _JSON,
    "email": st.from_regex(r"[a-z0-9]{1,12}@example\.(com|org)", fullmatch=True),
    "code": st.uuids().map(str),
    "label": st.text(max_size=20),
}
# Values that fit no column, or only by accident: the converters must answer 400, never 500.
WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    _FINITE,
    st.text(max_size=30),
    _JSON,
    st.sampled_from(
        [
            "2024-02-30",
            "2024-01-01T00:00:00Z",
            "24:00:00",
            "1.5",
            "12.345",
            "1e400",
            "NaN",
            "Infinity",
            "-0",
            "0x1F",
            "１２",
            "1_000",
            "00000000-0000-0000-0000-00000000000g",
            "a@b",
            "\x00",
            "\ud800",
            "' OR 1=1 --",
            "9" * 400,
        ]
    ),
)

_COLUMN = st.sampled_from(COLUMNS)
_ANY_COLUMN = st.sampled_from([*COLUMNS, "id", "nope", "ctid", "NAME", ""])
_OPS = st.sampled_from(
    [
        "eq",
        "ne",
        "lt",
        "lte",
        "gt",
        "gte",
        "in",
        "nin",
        "contains",
        "icontains",
        "startswith",
        "endswith",
        "isnull",
        "bogus",
    ]
)


def _record() -> st.SearchStrategy[dict[str, Any]]:
    valid = st.fixed_dictionaries({}, optional=VALID)
    wild = st.dictionaries(_ANY_COLUMN, WILD, max_size=4)
    return st.one_of(valid, valid, wild)


def _filters() -> st.SearchStrategy[Any]:
    operand = st.one_of(WILD, st.lists(WILD, max_size=3))
    leaf = st.one_of(
        st.dictionaries(_ANY_COLUMN, WILD, min_size=1, max_size=2),
        st.dictionaries(
            _COLUMN, st.dictionaries(_OPS, operand, min_size=1, max_size=2), min_size=1, max_size=2
        ),
    )
    return st.recursive(
        leaf,
        lambda inner: st.dictionaries(
            st.sampled_from(["or", "and"]), st.lists(inner, max_size=3), min_size=1, max_size=1
        ),
        max_leaves=10,
    )


def _comma_list(names: list[str], signs: bool = False) -> st.SearchStrategy[str]:
    prefix = st.sampled_from(["", "-"]) if signs else st.just("")
    item = st.tuples(prefix, st.sampled_from(names)).map("".join)
    return st.lists(item, min_size=1, max_size=3).map(",".join)


def _csv_file() -> st.SearchStrategy[bytes]:
    header = st.lists(st.sampled_from([*COLUMNS, "bogus", "", "NAME"]), min_size=1, max_size=4)
    row = st.lists(st.one_of(WILD.map(str), st.text(max_size=10)), max_size=5)

    def render(names: list[str], rows: list[list[str]], newline: str) -> bytes:
        lines = [",".join(names), *(",".join(cells) for cells in rows)]
        return (newline.join(lines) + newline).encode("utf-8", "surrogatepass")

    return st.builds(render, header, st.lists(row, max_size=5), st.sampled_from(["\n", "\r\n"]))


TABLE_NAMES = st.sampled_from([TABLE, TABLE, TABLE, "fuzzed_other", "FUZZED"])
QUERY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "table_name": TABLE_NAMES,
    "filters": _filters().map(json.dumps),
    "search": st.one_of(
        st.text(max_size=10),
        st.dictionaries(_ANY_COLUMN, st.text(max_size=5), min_size=1, max_size=2).map(json.dumps),
    ),
    "sort_by": _comma_list([*COLUMNS, "id", "nope"], signs=True),
    "order": st.sampled_from(["asc", "desc", "DESC", "sideways"]),
    "limit": st.integers(-2, 1002).map(str),
    "offset": st.integers(-2, 10**19).map(str),
    "fields": _comma_list([*COLUMNS, "id", "nope"]),
    "count": st.sampled_from(["exact", "estimated", "none", "all"]),
}
BODY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "table_name": TABLE_NAMES,
    "new_name": st.sampled_from(["fuzzed_renamed", "name", "select", "pg_x", TABLE, "qty2"]),
    "column_name": st.sampled_from([*COLUMNS, "id", "nope", "ctid"]),
    "columns": st.lists(_ANY_COLUMN, min_size=0, max_size=3),
    "fields": st.dictionaries(
        st.sampled_from(["a", "b", "id", "select", "x" * 64]),
        st.sampled_from(["text", "int unique", "varchar(0)", "numeric(1000,2)", "email index"]),
    ),
    "data": _record(),
    "records": st.lists(_record(), min_size=0, max_size=4),
    "id": st.one_of(st.integers(1, 14), st.integers(-(2**70), 2**70)),
    "column_type": st.sampled_from(
        [
            "text",
            "bigint",
            "varchar(3)",
            "numeric(4,1)",
            "date",
            "int unique",
            "jsonb index",
            "boolean not null",
            "integer default 'a'",
            "uuid",
            "email",
            "timestamp",
        ]
    ),
    "file": _csv_file(),
    "on_error": st.sampled_from(["skip", "abort"]),
}


def steer(generated: Any, values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Return the generated value as is, or pointed at the real table with some real values."""
    if not isinstance(generated, dict):
        return st.just(generated)
    # Steered, keep only the documented keys the product knows (it refuses unknown ones) and
    # drop `owner` (a random owner is another user's table: 404 for a non-admin).
    kept = {key: value for key, value in generated.items() if key in values or key in _EXTRA}
    optional = {key: values[key] for key in kept if key in values and key != "table_name"}
    steered = st.fixed_dictionaries({"table_name": values["table_name"]}, optional=optional).map(
        lambda real: {**kept, **real}
    )
    return st.one_of(st.just(generated), steered, steered, steered)


_EXTRA = {"delimiter", "encoding", "ignore_unknown_columns"}


def steer_path(generated: Any) -> st.SearchStrategy[Any]:
    """Return the generated path parameters, or the id of the real job."""
    if not isinstance(generated, dict) or "job_id" not in generated:
        return st.just(generated)
    real = st.just(None).map(lambda _: {**generated, "job_id": KNOWN["job_id"]})
    return st.one_of(st.just(generated), real)
