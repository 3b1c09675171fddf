import operator
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import perf_counter

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import CacheStats

from dms.api.errors import STATUS_BY_CODE
from dms.engine.errors import DmsError, InvalidRequest, LimitExceeded, ValidationFailed
from dms.engine.query import (
    CompiledRead,
    ReadParams,
    compile_read,
    compile_where,
    estimated_count,
    next_cursor,
    parse_read_params,
)
from dms.engine.types import TYPES

SCHEMA = "helper_query_test"
KEY = b"k" * 32
SPECS = {
    "name": "text",
    "code": "varchar(20)",
    "age": "integer",
    "big": "bigint",
    "price": "numeric(10,2)",
    "score": "double",
    "active": "boolean",
    "born": "date",
    "seen": "timestamp",
    "stamp": "timestamptz",
    "token": "uuid",
    "data": "jsonb",
    "email": "email",
    "alarm": "time",
    "label": "text",
}
TYPES_MAP = {name: TYPES.parse_type(spec) for name, spec in SPECS.items()}
NAMES = [
    "Alice", "alice", "ALICE", "Bob", "100%", "50% off", "a_b", "axb", "a\\b", "back\\slash",
    "O'Brien", "x'; DROP TABLE students; --", "Jo", "john", "JOHN", "Johanna",
    "under_score", "percent%sign", "", None, "%", "_", "\\",
]  # fmt: skip
ROW_COUNT = 46


def _row(i):
    return {
        "name": NAMES[i % len(NAMES)],
        "code": None if i % 9 == 4 else f"c{(i * 5) % 13:02d}",
        "age": None if i % 7 == 3 else 18 + (i * 11) % 50,
        "big": None if i % 10 == 9 else (i - 20) * 10**12,
        "price": None if i % 8 == 5 else Decimal((i * 137) % 1000) / 4,
        "score": None if i % 6 == 2 else (i * 3.7) % 20 - 5,
        "active": None if i % 5 == 0 else i % 2 == 0,
        "born": None if i % 11 == 7 else date(1980 + i % 30, 1 + i % 12, 1 + i % 28),
        "seen": None if i % 4 == 1 else datetime(2024, 1, 1) + timedelta(hours=i * 13),
        "stamp": None
        if i % 4 == 2
        else datetime(2024, 6, 1, tzinfo=UTC) + timedelta(minutes=97 * i),
        "token": None if i % 13 == 12 else uuid.UUID(int=(i * 7919 + 1) ** 9 % 2**128),
        "data": None if i % 3 == 0 else {"k": i % 4, "tags": ["a", "b"][: i % 3]},
        "email": None if i % 5 == 1 else f"user{i % 17}@example.com",
        "alarm": None if i % 6 == 5 else time(i % 24, (i * 7) % 60),
        "label": f"l{(i * 7) % 10}",
    }


@pytest.fixture(scope="module")
def engine(database_url):
    """Return an engine on the session's database (conftest), with SCHEMA made afresh."""
    eng = sa.create_engine(make_url(database_url).set(drivername="postgresql+psycopg"))
    with eng.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    yield eng
    with eng.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    eng.dispose()


def _id_column():
    return sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True)


@pytest.fixture(scope="module")
def table(engine):
    metadata = sa.MetaData(schema=SCHEMA)
    # none_as_null: a Python None in the jsonb column is SQL NULL, not JSON 'null'.
    columns = [
        sa.Column(
            name,
            postgresql.JSONB(none_as_null=True) if name == "data" else kind.sa_type(),
            nullable=name != "label",  # a NOT NULL column takes the row-value keyset path
        )
        for name, kind in TYPES_MAP.items()
    ]
    items = sa.Table("items", metadata, _id_column(), *columns)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), [_row(i) for i in range(ROW_COUNT)])
        conn.execute(sa.text(f"ANALYZE {SCHEMA}.items"))
    return items


@pytest.fixture(scope="module")
def rows(engine, table):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def compiled(table, **params):
    return compile_read(table, TYPES_MAP, ReadParams(**params), cursor_key=KEY)


def fetch(engine, table, **params):
    with engine.connect() as conn:
        read = compiled(table, **params)
        return conn.execute(read.select, read.values).mappings().all()


def ids(engine, table, **params):
    return [row["id"] for row in fetch(engine, table, limit=1000, **params)]


def fails(code, call, *args, **kwargs):
    with pytest.raises(DmsError) as info:
        call(*args, **kwargs)
    assert info.value.code == code
    assert STATUS_BY_CODE[info.value.code] == 400
    return info.value


# --- the Python oracle ------------------------------------------------------------------


def _convert(column, value):
    kind = TYPES.parse_type("bigint") if column == "id" else TYPES_MAP[column]
    return kind.from_json(value)


_ORDERED = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}


def matches(row, column, op, value):
    have = row[column]
    if op == "isnull":
        return (have is None) is value
    if op in ("eq", "ne"):
        same = have is None if value is None else have == _convert(column, value)
        return same if op == "eq" else not same
    if op in _ORDERED:
        return have is not None and _ORDERED[op](have, _convert(column, value))
    if op in ("in", "nin"):
        inside = have in [_convert(column, item) for item in value]
        return inside if op == "in" else not inside
    if have is None:
        return False
    if op == "contains":
        return value in have
    if op == "icontains":
        return value.lower() in have.lower()
    return have.startswith(value) if op == "startswith" else have.endswith(value)


def expected_ids(rows, predicate):
    return [row["id"] for row in rows if predicate(row)]


def _nulls_last(value):
    return (value is None, value if value is not None else 0)


def sorted_ids(rows, keys):
    """Sort like PostgreSQL: NULL above every value; stable sorts from the last key to the first."""
    ordered = list(rows)
    for column, desc in reversed(keys):
        ordered.sort(key=lambda r, c=column: _nulls_last(r[c]), reverse=desc)
    return [row["id"] for row in ordered]


# --- operators --------------------------------------------------------------------------

TOKEN_1 = str(_row(1)["token"])
OPERATOR_CASES = [
    ("name", "eq", "alice"),
    ("name", "eq", "O'Brien"),
    ("name", "eq", ""),
    ("name", "eq", None),
    ("name", "ne", "alice"),
    ("name", "ne", None),
    ("name", "in", ["Alice", "Bob", "nobody"]),
    ("name", "nin", ["Alice", "Bob"]),
    ("name", "contains", "li"),
    ("name", "contains", "%"),
    ("name", "contains", "_"),
    ("name", "contains", "\\"),
    ("name", "contains", "'"),
    ("name", "contains", "% o"),
    ("name", "icontains", "JO"),
    ("name", "icontains", "alice"),
    ("name", "icontains", "_S"),
    ("name", "startswith", "a"),
    ("name", "startswith", "A"),
    ("name", "startswith", "a_"),
    ("name", "startswith", "100%"),
    ("name", "endswith", "b"),
    ("name", "endswith", "\\b"),
    ("name", "endswith", "%"),
    ("name", "isnull", True),
    ("name", "isnull", False),
    ("code", "eq", "c05"),
    ("code", "ne", "c05"),
    ("code", "lt", "c05"),
    ("code", "lte", "c05"),
    ("code", "gt", "c10"),
    ("code", "gte", "c10"),
    ("code", "in", ["c01", "c02", "c03"]),
    ("code", "nin", ["c01", "c02", "c03"]),
    ("code", "contains", "1"),
    ("code", "startswith", "c0"),
    ("code", "endswith", "5"),
    ("code", "icontains", "C1"),
    ("age", "eq", 29),
    ("age", "eq", 29.0),
    ("age", "ne", 29),
    ("age", "lt", 40),
    ("age", "lte", 40),
    ("age", "gt", 40),
    ("age", "gte", 40),
    ("age", "in", [18, 29, 40]),
    ("age", "nin", [18, 29, 40]),
    ("age", "isnull", True),
    ("big", "eq", 0),
    ("big", "lt", -5 * 10**12),
    ("big", "gte", 10**13),
    ("big", "in", [0, 10**12, 9 * 10**18]),
    ("big", "nin", [0]),
    ("price", "eq", "34.25"),
    ("price", "eq", 34.25),
    ("price", "ne", 34.25),
    ("price", "lt", 100),
    ("price", "gte", "150.5"),
    ("price", "in", ["34.25", 68.5, 0]),
    ("score", "eq", 9.8),
    ("score", "lt", 0),
    ("score", "gt", 7.25),
    ("score", "lte", 14),
    ("score", "nin", [-5]),
    ("active", "eq", True),
    ("active", "ne", True),
    ("active", "eq", False),
    ("active", "lt", True),
    ("active", "in", [False]),
    ("active", "isnull", True),
    ("born", "eq", "1981-02-02"),
    ("born", "lt", "1995-06-15"),
    ("born", "gte", "1995-06-15"),
    ("born", "in", ["1981-02-02", "1982-03-03"]),
    ("seen", "eq", "2024-01-02T15:00:00"),
    ("seen", "gt", "2024-01-10 12:00:00"),
    ("seen", "lte", "2024-01-10 12:00"),
    ("stamp", "eq", "2024-06-01T01:37:00Z"),
    ("stamp", "eq", "2024-06-01T03:37:00+02:00"),
    ("stamp", "lt", "2024-06-01T12:00:00Z"),
    ("stamp", "gte", "2024-06-02 00:00:00+01:00"),
    ("token", "eq", TOKEN_1),
    ("token", "eq", TOKEN_1.upper()),
    ("token", "ne", TOKEN_1),
    ("token", "lt", TOKEN_1),
    ("token", "in", [TOKEN_1, str(uuid.UUID(int=1))]),
    ("data", "eq", {"k": 1, "tags": ["a"]}),
    ("data", "ne", {"k": 1, "tags": ["a"]}),
    ("data", "in", [{"k": 1, "tags": ["a"]}, {"k": 2, "tags": ["a", "b"]}]),
    ("data", "nin", [{"k": 1, "tags": ["a"]}]),
    ("data", "isnull", False),
    ("email", "eq", "user3@example.com"),
    ("email", "contains", "user1"),
    ("email", "endswith", "2@example.com"),
    ("email", "icontains", "USER4@"),
    ("email", "in", ["user3@example.com", "user4@example.com"]),
    ("alarm", "eq", "01:07"),
    ("alarm", "lt", "12:00"),
    ("alarm", "gte", "12:00:30"),
    ("label", "eq", "l3"),
    ("label", "ne", "l3"),
    ("label", "lt", "l3"),
    ("label", "nin", ["l1", "l2"]),
    ("id", "eq", 7),
    ("id", "lt", 10),
    ("id", "gte", 40),
    ("id", "in", [1, 2, 3, 999]),
    ("id", "nin", [1, 2, 3]),
    ("id", "isnull", True),
]


@pytest.mark.parametrize(("column", "op", "value"), OPERATOR_CASES)
def test_operator_selects_what_python_selects(engine, table, rows, column, op, value):
    want = expected_ids(rows, lambda r: matches(r, column, op, value))
    assert ids(engine, table, filters={column: {op: value}}) == want


def test_operator_cases_are_not_trivial(rows):
    trivial = [
        case
        for case in OPERATOR_CASES
        if len(expected_ids(rows, lambda r, c=case: matches(r, *c))) in (0, len(rows))
    ]
    assert trivial == [("id", "isnull", True)]


@pytest.mark.parametrize(
    ("filters", "predicate"),
    [
        ({"age": 29}, lambda r: r["age"] == 29),
        ({"age": None}, lambda r: r["age"] is None),
        ({"name": "Bob"}, lambda r: r["name"] == "Bob"),
        ({"data": [1, 2]}, lambda r: r["data"] == [1, 2]),
        ({"AGE": 29}, lambda r: r["age"] == 29),
        ({"age": {"GTE": 40}}, lambda r: r["age"] is not None and r["age"] >= 40),
        ({}, lambda r: True),
    ],
)
def test_shorthand_equality_and_names_in_any_case(engine, table, rows, filters, predicate):
    assert ids(engine, table, filters=filters) == expected_ids(rows, predicate)


def _age(r):
    return r["age"] if r["age"] is not None else -1


@pytest.mark.parametrize(
    ("filters", "predicate"),
    [
        (
            {"age": {"gte": 30, "lt": 50}},
            lambda r: 30 <= _age(r) < 50,
        ),
        (
            {"age": {"gte": 30}, "active": True},
            lambda r: _age(r) >= 30 and r["active"] is True,
        ),
        (
            {"or": [{"age": {"lt": 25}}, {"name": {"icontains": "jo"}}]},
            lambda r: 0 <= _age(r) < 25 or "jo" in (r["name"] or "").lower(),
        ),
        (
            {"and": [{"age": {"gte": 20}}, {"or": [{"active": True}, {"code": None}]}]},
            lambda r: _age(r) >= 20 and (r["active"] is True or r["code"] is None),
        ),
        (
            {
                "or": [
                    {"and": [{"age": {"lt": 30}}, {"active": False}]},
                    {"and": [{"label": "l3"}, {"or": [{"score": {"gt": 5}}, {"score": None}]}]},
                ],
                "id": {"lte": 40},
            },
            lambda r: (
                r["id"] <= 40
                and (
                    (0 <= _age(r) < 30 and r["active"] is False)
                    or (r["label"] == "l3" and (r["score"] is None or r["score"] > 5))
                )
            ),
        ),
        ({"OR": [{"id": 1}, {"id": 2}]}, lambda r: r["id"] in (1, 2)),
    ],
)
def test_nested_and_or_select_what_python_selects(engine, table, rows, filters, predicate):
    assert ids(engine, table, filters=filters) == expected_ids(rows, predicate)


def _nested(depth):
    node = {"age": {"gte": 18}}
    for _ in range(depth - 1):
        node = {"or": [node]}
    return node


def test_nesting_eight_deep_is_accepted(engine, table, rows):
    assert ids(engine, table, filters=_nested(8)) == expected_ids(rows, lambda r: _age(r) >= 18)


@pytest.mark.parametrize("depth", [9, 10, 50])
def test_nesting_deeper_than_eight_is_rejected(table, depth):
    error = fails("limit_exceeded", compile_where, table, TYPES_MAP, _nested(depth), None)
    assert "filters" in error.errors


@pytest.mark.parametrize(
    "filters",
    [
        {"age": {"in": list(range(200))}},
        {"or": [{"id": i} for i in range(200)]},
        {"and": [{"id": {"ne": i}} for i in range(199)], "age": {"in": [1]}},
        {"or": [{"id": {"in": list(range(100))}}, {"age": {"nin": list(range(100))}}]},
    ],
)
def test_two_hundred_terms_are_accepted(engine, table, filters):
    assert isinstance(ids(engine, table, filters=filters), list)


@pytest.mark.parametrize(
    "filters",
    [
        {"age": {"in": list(range(201))}},
        {"or": [{"id": i} for i in range(201)]},
        {"and": [{"id": {"ne": i}} for i in range(200)], "age": {"in": [1]}},
        {"or": [{"id": {"in": list(range(100))}}, {"age": {"nin": list(range(101))}}]},
        {"or": [{"id": 1, "age": 2}] * 101},
    ],
)
def test_more_than_two_hundred_terms_are_rejected(table, filters):
    error = fails("limit_exceeded", compile_where, table, TYPES_MAP, filters, None)
    assert "filters" in error.errors


def _deep_dict(depth):
    node: dict = {"id": 1}
    for _ in range(depth):
        node = {"and": [node]}
    return node


@pytest.mark.parametrize(
    "filters",
    [
        {"or": [{"id": 1}] * 100_000},
        {"age": {"in": list(range(100_000))}},
        {"age": {f"op{i}": 1 for i in range(100_000)}},
        {"or": [{"or": [{"id": 1}] * 100}] * 1000},
        _deep_dict(10_000),
    ],
    ids=["or-list", "in-list", "operators", "lists-of-lists", "deep"],
)
def test_huge_filters_fail_fast(table, filters):
    # The bar is "well under a second"; the check costs milliseconds, so 1 s is a
    # bound that only a walk of the whole input (or worse) could break, whatever the machine.
    started = perf_counter()
    fails("limit_exceeded", compile_where, table, TYPES_MAP, filters, None)
    assert perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "text",
    [
        '{"or":[' * 10_000 + "{}" + "]}" * 10_000,
        '{"age":{"in":[' + ",".join(["1"] * 100_000) + "]}}",
        orjson.dumps({"or": [{"id": 1}] * 100_000}).decode(),
        orjson.dumps({"or": [{"id": 1}] * 1_000}).decode(),
    ],
    ids=["deep", "long-in", "long-or", "short-or"],
)
def test_huge_filter_strings_fail_fast(table, text):
    started = perf_counter()
    with pytest.raises((InvalidRequest, LimitExceeded)):
        compile_read(table, TYPES_MAP, parse_read_params({"filters": text}), cursor_key=KEY)
    assert perf_counter() - started < 1.0  # see test_huge_filters_fail_fast


@pytest.mark.parametrize(
    ("filters", "code", "key"),
    [
        ({"nope": 1}, "invalid_request", "filters"),
        ({"or": [{"nope": 1}]}, "invalid_request", "filters"),
        ({"age": {"between": 1}}, "invalid_request", "age"),
        ({"age": {"like": "1"}}, "invalid_request", "age"),
        ({"age": {}}, "invalid_request", "age"),
        ({"data": {"lt": 1}}, "invalid_request", "data"),
        ({"data": {"k": 1}}, "invalid_request", "data"),
        ({"data": {"gte": {"k": 1}}}, "invalid_request", "data"),
        ({"age": {"contains": "1"}}, "invalid_request", "age"),
        ({"active": {"icontains": "t"}}, "invalid_request", "active"),
        ({"data": {"startswith": "x"}}, "invalid_request", "data"),
        ({"token": {"endswith": "1"}}, "invalid_request", "token"),
        ({"age": {"in": 5}}, "invalid_request", "age"),
        ({"age": {"in": []}}, "invalid_request", "age"),
        ({"age": {"nin": "1,2"}}, "invalid_request", "age"),
        ({"age": {"isnull": "yes"}}, "invalid_request", "age"),
        ({"age": {"isnull": 1}}, "invalid_request", "age"),
        ({"or": {"age": 1}}, "invalid_request", "filters"),
        ({"or": []}, "invalid_request", "filters"),
        ({"and": "x"}, "invalid_request", "filters"),
        ({"or": [1]}, "invalid_request", "filters"),
        ({"or": [{}]}, "invalid_request", "filters"),
        ({"and": [{"id": 1}, []]}, "invalid_request", "filters"),
        ([{"id": 1}], "invalid_request", "filters"),
        ("id=1", "invalid_request", "filters"),
        ({"age": "x"}, "validation_error", "age"),
        ({"age": True}, "validation_error", "age"),
        ({"age": 2**40}, "validation_error", "age"),
        ({"age": 1.5}, "validation_error", "age"),
        ({"age": {"gt": None}}, "validation_error", "age"),
        ({"age": {"in": [1, None]}}, "validation_error", "age"),
        ({"age": {"in": [1, "x"]}}, "validation_error", "age"),
        ({"id": "1"}, "validation_error", "id"),
        ({"big": 2**63}, "validation_error", "big"),
        ({"price": "1e5"}, "validation_error", "price"),
        ({"price": 123456789012}, "validation_error", "price"),
        ({"score": "NaN"}, "validation_error", "score"),
        ({"active": "true"}, "validation_error", "active"),
        ({"born": "2024-02-30"}, "validation_error", "born"),
        ({"born": {"lt": "yesterday"}}, "validation_error", "born"),
        ({"seen": "2024-01-01T00:00:00Z"}, "validation_error", "seen"),
        ({"stamp": "noon"}, "validation_error", "stamp"),
        ({"token": "not-a-uuid"}, "validation_error", "token"),
        ({"token": {"in": ["x'; --"]}}, "validation_error", "token"),
        ({"code": "x" * 21}, "validation_error", "code"),
        ({"email": "not-an-email"}, "validation_error", "email"),
        ({"alarm": "25:00"}, "validation_error", "alarm"),
        ({"name": 5}, "validation_error", "name"),
        ({"name": {"contains": 5}}, "validation_error", "name"),
        ({"name": {"contains": None}}, "validation_error", "name"),
        ({"name": {"startswith": "a\x00"}}, "validation_error", "name"),
        ({"data": {"eq": float("nan")}}, "validation_error", "data"),
    ],
)
def test_bad_filters_are_rejected_with_the_field_named(table, filters, code, key):
    error = fails(code, compile_where, table, TYPES_MAP, filters, None)
    assert key in error.errors
    assert all(isinstance(m, str) and m for m in error.errors[key])


def test_conversion_error_carries_the_type_message(table):
    error = fails("validation_error", compile_where, table, TYPES_MAP, {"age": "x"}, None)
    assert error.errors == {"age": ["not a valid integer"]}
    error = fails("invalid_request", compile_where, table, TYPES_MAP, {"x": 1}, None)
    assert error.errors == {"filters": ["unknown column 'x'"]}


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("%", {"100%", "50% off", "percent%sign", "%"}),
        ("_", {"a_b", "under_score", "_"}),
        ("\\", {"a\\b", "back\\slash", "\\"}),
        ("a_b", {"a_b"}),
        ("a%", set()),
        ("'", {"O'Brien", "x'; DROP TABLE students; --"}),
    ],
)
def test_like_wildcards_in_values_are_literal(engine, table, value, want):
    for op in ("contains", "icontains"):
        found = {r["name"] for r in fetch(engine, table, filters={"name": {op: value}}, limit=1000)}
        assert found == want


def test_contains_is_case_sensitive_and_icontains_is_not(engine, table):
    def names(op, value):
        return {r["name"] for r in fetch(engine, table, filters={"name": {op: value}}, limit=1000)}

    assert names("contains", "lic") == {"Alice", "alice"}
    assert names("contains", "LIC") == {"ALICE"}
    assert names("icontains", "LIC") == {"Alice", "alice", "ALICE"}
    assert names("startswith", "Jo") == {"Jo", "Johanna"}
    assert names("endswith", "N") == {"JOHN"}


# --- search -----------------------------------------------------------------------------


def _icontains(value, text):
    return value is not None and text.lower() in value.lower()


def _anywhere(row, text):
    return any(_icontains(row[c], text) for c in ("name", "code", "email", "label"))


@pytest.mark.parametrize(
    ("search", "predicate"),
    [
        ({"name": "jo"}, lambda r: _icontains(r["name"], "jo")),
        ({"name": "%"}, lambda r: _icontains(r["name"], "%")),
        (
            {"name": "jo", "email": "USER1"},
            lambda r: _icontains(r["name"], "jo") or _icontains(r["email"], "user1"),
        ),
        ({"CODE": "c1"}, lambda r: _icontains(r["code"], "c1")),
        ({"name": ""}, lambda r: r["name"] is not None),
        ({}, lambda r: True),
        ("ali", lambda r: _anywhere(r, "ali")),
        ("L3", lambda r: _anywhere(r, "l3")),
        ("_", lambda r: _anywhere(r, "_")),
        ("@example", lambda r: r["email"] is not None),
        ("", lambda r: True),
        ("zzz", lambda r: False),
        (42, lambda r: _anywhere(r, "42")),
    ],
)  # fmt: skip
def test_search_selects_what_python_selects(engine, table, rows, search, predicate):
    assert ids(engine, table, search=search) == expected_ids(rows, predicate)


def test_search_and_filters_are_combined(engine, table, rows):
    got = ids(engine, table, search={"name": "a"}, filters={"age": {"gte": 30}})
    assert got == expected_ids(rows, lambda r: _icontains(r["name"], "a") and _age(r) >= 30)


@pytest.mark.parametrize(
    ("search", "key"),
    [
        ({"age": "1"}, "search"),
        ({"data": "k"}, "search"),
        ({"nope": "x"}, "search"),
        ({"id": "1"}, "search"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"name": "a\x00"}, "name"),
        ("a\x00", "search"),
    ],
)
def test_bad_search_is_rejected(table, search, key):
    with pytest.raises((InvalidRequest, ValidationFailed)) as info:
        compile_where(table, TYPES_MAP, None, search)
    assert key in info.value.errors


@pytest.fixture(scope="module")
def numbers(engine):
    metadata = sa.MetaData(schema=SCHEMA)
    numbers = sa.Table("numbers", metadata, _id_column(), sa.Column("n", sa.Integer))
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(numbers.insert(), [{"n": i} for i in range(5)])
    return numbers


def test_search_string_without_text_columns_matches_nothing(engine, numbers):
    params = ReadParams(search="1")
    read = compile_read(numbers, {"n": TYPES.parse_type("integer")}, params, cursor_key=KEY)
    with engine.connect() as conn:
        assert conn.execute(read.select, read.values).all() == []
        assert conn.execute(read.count, read.values).scalar_one() == 0


# --- sorting and paging -----------------------------------------------------------------

SORTS = [
    (None, None, [("id", False)]),
    (None, "desc", [("id", True)]),
    ("age", None, [("age", False), ("id", False)]),
    ("-age", None, [("age", True), ("id", True)]),
    ("age", "desc", [("age", True), ("id", True)]),
    ("-age", "asc", [("age", True), ("id", True)]),
    ("code,-age", None, [("code", False), ("age", True), ("id", True)]),
    ("-code,age", None, [("code", True), ("age", False), ("id", False)]),
    ("code,-age", "desc", [("code", True), ("age", True), ("id", True)]),
    ("active,-score", None, [("active", False), ("score", True), ("id", True)]),
    ("-born,seen", None, [("born", True), ("seen", False), ("id", False)]),
    ("stamp", None, [("stamp", False), ("id", False)]),
    ("-token", None, [("token", True), ("id", True)]),
    ("price,big", "desc", [("price", True), ("big", True), ("id", True)]),
    ("alarm", None, [("alarm", False), ("id", False)]),
    ("label", None, [("label", False), ("id", False)]),
    ("-label", None, [("label", True), ("id", True)]),
    ("label,-id", None, [("label", False), ("id", True)]),
    ("-id,label", None, [("id", True)]),
    (" label , AGE ", None, [("label", False), ("age", False), ("id", False)]),
    (
        "label,code,active",
        None,
        [("label", False), ("code", False), ("active", False), ("id", False)],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("sort_by", "order", "keys"), SORTS)
def test_sort_orders_rows_like_postgresql(engine, table, rows, sort_by, order, keys):
    read = compiled(table, sort_by=sort_by, order=order)
    assert read.order_keys == keys
    assert ids(engine, table, sort_by=sort_by, order=order) == sorted_ids(rows, keys)


def _offset_pages(engine, table, limit, **params):
    seen, offset = [], 0
    while True:
        page = fetch(engine, table, limit=limit, offset=offset, **params)
        seen += [row["id"] for row in page[:limit]]
        if len(page) <= limit:
            return seen
        offset += limit


def _cursor_pages(engine, table, limit, between=None, **params):
    seen, cursor = [], None
    for _ in range(ROW_COUNT * 3):
        read = compiled(table, limit=limit, cursor=cursor, **params)
        with engine.connect() as conn:
            page = conn.execute(read.select, read.values).mappings().all()
        assert len(page) <= limit + 1
        seen += [row["id"] for row in page[:limit]]
        if len(page) <= limit:
            return seen
        cursor = next_cursor(read, page[limit - 1], cursor_key=KEY)
        if between:
            between()
    raise AssertionError("cursor pages never ended")


@pytest.mark.parametrize("limit", [1, 4, 7, 45, 46, 50])
@pytest.mark.parametrize(("sort_by", "order", "keys"), SORTS)
def test_offset_pages_cover_every_row_once(engine, table, rows, sort_by, order, keys, limit):
    assert _offset_pages(engine, table, limit, sort_by=sort_by, order=order) == sorted_ids(
        rows, keys
    )


@pytest.mark.parametrize("limit", [1, 4, 7, 45, 46, 50])
@pytest.mark.parametrize(("sort_by", "order", "keys"), SORTS)
def test_cursor_pages_cover_every_row_once(engine, table, rows, sort_by, order, keys, limit):
    assert _cursor_pages(engine, table, limit, sort_by=sort_by, order=order) == sorted_ids(
        rows, keys
    )


@pytest.mark.parametrize(
    "params",
    [
        {"sort_by": "-code,age", "fields": "name"},
        {"sort_by": "active,-score", "filters": {"age": {"gte": 25}}, "fields": "id"},
        {"sort_by": "label,-stamp", "search": "a", "count": "none"},
        {"sort_by": "-born", "filters": {"or": [{"born": None}, {"age": {"lt": 40}}]}},
    ],
)
def test_cursor_pages_with_filters_and_fields_match_one_big_page(engine, table, params):
    assert _cursor_pages(engine, table, 3, **params) == ids(engine, table, **params)


@pytest.mark.parametrize("sort_by", ["id", "-id", "code,-age", "-code,age", "label", "-stamp"])
def test_cursor_pages_survive_inserts_between_pages(engine, table, rows, sort_by):
    before = ids(engine, table, sort_by=sort_by)
    counter = iter(range(10_000))

    def insert():
        i = next(counter)
        with engine.begin() as conn:
            conn.execute(table.insert(), [_row(3 * i + j) for j in range(3)])

    try:
        seen = _cursor_pages(engine, table, 5, between=insert, sort_by=sort_by)
    finally:
        with engine.begin() as conn:
            conn.execute(table.delete().where(table.c.id > max(r["id"] for r in rows)))
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in set(before)] == before


def test_page_query_fetches_one_extra_row(engine, table):
    assert len(fetch(engine, table, limit=10)) == 11
    assert len(fetch(engine, table, limit=ROW_COUNT)) == ROW_COUNT
    assert len(fetch(engine, table, limit=10, offset=40)) == ROW_COUNT - 40


# --- cursors that must not work ---------------------------------------------------------


@pytest.fixture(scope="module")
def cursor(engine, table):
    read = compiled(table, limit=5, sort_by="code,-age", filters={"age": {"gte": 20}})
    with engine.connect() as conn:
        last = conn.execute(read.select, read.values).mappings().all()[4]
    return next_cursor(read, last, cursor_key=KEY)


def _flip(text, at):
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


@pytest.mark.parametrize(
    "change",
    [
        lambda c: _flip(c, 0),
        lambda c: _flip(c, 10),
        lambda c: _flip(c, len(c) - 1),
        lambda c: _flip(c, c.index(".") + 1),
        lambda c: c[:-1],
        lambda c: c + "A",
        lambda c: c + "!",
        lambda c: c.replace(".", ""),
        lambda c: c.split(".")[0],
        lambda c: "." + c.split(".")[1],
        lambda c: c.split(".")[1] + "." + c.split(".")[0],
        lambda c: "x" + c,
        lambda c: c + ".x",
        lambda c: c + "\x00",
        lambda c: "é" + c,
        lambda c: "garbage",
        lambda c: "a.b",
        lambda c: ".",
    ],
)
def test_tampered_cursor_is_rejected(table, cursor, change):
    params = ReadParams(
        limit=5, sort_by="code,-age", filters={"age": {"gte": 20}}, cursor=change(cursor)
    )
    error = fails("invalid_request", compile_read, table, TYPES_MAP, params, cursor_key=KEY)
    assert "cursor" in error.errors


def test_cursor_signed_with_another_key_is_rejected(table, cursor):
    params = ReadParams(sort_by="code,-age", filters={"age": {"gte": 20}}, cursor=cursor)
    fails("invalid_request", compile_read, table, TYPES_MAP, params, cursor_key=b"other" * 8)


@pytest.mark.parametrize(
    "params",
    [
        {"sort_by": "code,age"},
        {"sort_by": "code,-age", "order": "desc"},
        {"sort_by": "-age"},
        {"filters": {"age": {"gte": 20}}},
        {"sort_by": "code,-age"},
        {"sort_by": "code,-age", "filters": {"age": {"gte": 21}}},
        {"sort_by": "code,-age", "filters": {"age": {"gte": 20}}, "search": "a"},
    ],
)
def test_cursor_for_another_query_is_rejected(table, cursor, params):
    error = fails(
        "invalid_request",
        compile_read,
        table,
        TYPES_MAP,
        ReadParams(cursor=cursor, **params),
        cursor_key=KEY,
    )
    assert "does not match" in error.message


def test_cursor_for_another_table_is_rejected(engine, cursor):
    metadata = sa.MetaData(schema=SCHEMA)
    columns = [sa.Column(name, kind.sa_type()) for name, kind in TYPES_MAP.items()]
    other = sa.Table("other_items", metadata, _id_column(), *columns)
    params = ReadParams(sort_by="code,-age", filters={"age": {"gte": 20}}, cursor=cursor)
    fails("invalid_request", compile_read, other, TYPES_MAP, params, cursor_key=KEY)


def test_cursor_after_a_column_type_change_is_rejected(table, cursor):
    changed = dict(TYPES_MAP, age=TYPES.parse_type("bigint"))
    params = ReadParams(sort_by="code,-age", filters={"age": {"gte": 20}}, cursor=cursor)
    fails("invalid_request", compile_read, table, changed, params, cursor_key=KEY)


def test_cursor_with_offset_is_rejected(cursor):
    with pytest.raises(InvalidRequest) as info:
        ReadParams(cursor=cursor, offset=5)
    assert "offset" in info.value.errors
    with pytest.raises(InvalidRequest):
        parse_read_params({"cursor": cursor, "offset": "5"})


def test_cursor_with_different_fields_and_limit_still_works(table, cursor):
    params = ReadParams(
        sort_by="code,-age", filters={"age": {"gte": 20}}, cursor=cursor, fields="name", limit=2
    )
    assert compile_read(table, TYPES_MAP, params, cursor_key=KEY).columns == ["id", "name"]


def test_empty_cursor_key_is_a_programming_error(table):
    with pytest.raises(ValueError):
        compile_read(table, TYPES_MAP, ReadParams(), cursor_key=b"")


# --- injection --------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE helper_query_test.items; --",
    "x' OR '1'='1",
    "1; DELETE FROM helper_query_test.items",
    "\\'; DROP TABLE helper_query_test.items; --",
    "$$; DROP TABLE helper_query_test.items; $$",
    "%' OR 1=1 --",
    "') OR ('a'='a",
    'name"; --',
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize(
    "make",
    [
        lambda v: {"filters": {"name": v}},
        lambda v: {"filters": {"name": {"icontains": v}}},
        lambda v: {"filters": {"code": {"in": [v[:20], "c01' --"]}}},
        lambda v: {"filters": {"label": {"startswith": v}}},
        lambda v: {"search": v},
        lambda v: {"search": {"name": v, "email": v}},
    ],
)
def test_injection_values_are_plain_values(engine, table, value, make):
    assert fetch(engine, table, **make(value)) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == ROW_COUNT


@pytest.mark.parametrize(
    "sort_by",
    [
        "name; drop table x",
        "name desc",
        "name asc",
        "1",
        "lower(name)",
        "name nulls first",
        '"name"',
        "items.name",
        "name--",
        "--name",
        "+name",
        "name,",
        ",name",
        "name,,age",
        ",",
        " ,name",
        "-",
        "name)",
        "(select 1)",
        'name collate "C"',
        "nome",
        "data",
        "name,-name",
        "age,AGE",
        "ctid",
        "oid",
        "naïve",
        "name\x00",
    ],
)
def test_sort_by_that_is_not_a_plain_column_list_is_rejected(table, sort_by):
    error = fails(
        "invalid_request",
        compile_read,
        table,
        TYPES_MAP,
        ReadParams(sort_by=sort_by),
        cursor_key=KEY,
    )
    assert "sort_by" in error.errors


# --- fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "columns"),
    [
        (None, ["id", *SPECS]),
        ("", ["id", *SPECS]),
        ("name", ["id", "name"]),
        ("name,age", ["id", "name", "age"]),
        ("age,name", ["id", "age", "name"]),
        ("id", ["id"]),
        ("name,id", ["id", "name"]),
        ("name,name,age,name", ["id", "name", "age"]),
        (" Name , AGE ", ["id", "name", "age"]),
        ("data,token,stamp", ["id", "data", "token", "stamp"]),
    ],
)
def test_fields_choose_the_output_columns(engine, table, fields, columns):
    read = compiled(table, fields=fields)
    assert read.columns == columns
    with engine.connect() as conn:
        row = conn.execute(read.select, read.values).mappings().first()
    assert list(row)[: len(columns)] == columns


def test_sort_columns_left_out_of_fields_are_still_selected_after_them(table):
    read = compiled(table, fields="name", sort_by="-age")
    assert read.columns == ["id", "name"]
    assert [c.name for c in read.select.selected_columns] == ["id", "name", "age"]


@pytest.mark.parametrize(
    "fields", ["nope", "name,nope", "name,", "name;drop", "*", "name age", "ctid", "items.name"]
)
def test_unknown_fields_are_rejected(table, fields):
    error = fails(
        "invalid_request", compile_read, table, TYPES_MAP, ReadParams(fields=fields), cursor_key=KEY
    )
    assert "fields" in error.errors


# --- parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, ReadParams()),
        ({"table_name": "x", "owner": "y", "other": "z"}, ReadParams()),
        ({"limit": "1"}, ReadParams(limit=1)),
        ({"limit": "1000"}, ReadParams(limit=1000)),
        ({"limit": "007"}, ReadParams(limit=7)),
        ({"limit": ""}, ReadParams()),
        ({"offset": "0"}, ReadParams()),
        ({"offset": "123456789012"}, ReadParams(offset=123456789012)),
        ({"order": "DESC"}, ReadParams(order="desc")),
        ({"order": "asc"}, ReadParams(order="asc")),
        ({"count": "None"}, ReadParams(count="none")),
        ({"count": "estimated"}, ReadParams(count="estimated")),
        ({"filters": '{"age": 3}'}, ReadParams(filters={"age": 3})),
        ({"filters": ""}, ReadParams()),
        ({"search": '{"name": "jo"}'}, ReadParams(search={"name": "jo"})),
        ({"search": ' {"name": "jo"}'}, ReadParams(search={"name": "jo"})),
        ({"search": "jo"}, ReadParams(search="jo")),
        ({"search": '"jo"'}, ReadParams(search='"jo"')),
        ({"search": "42"}, ReadParams(search="42")),
        ({"search": "[1]"}, ReadParams(search="[1]")),
        ({"search": "{not json"}, ReadParams(search="{not json")),
        ({"sort_by": "-age,name"}, ReadParams(sort_by="-age,name")),
        ({"sort_by": ""}, ReadParams()),
        ({"fields": "a,b"}, ReadParams(fields="a,b")),
        ({"cursor": "abc"}, ReadParams(cursor="abc")),
        ({"cursor": ""}, ReadParams()),
    ],
)
def test_parse_read_params_reads_the_query_string(args, expected):
    assert parse_read_params(args) == expected


@pytest.mark.parametrize(
    ("args", "code", "key"),
    [
        ({"limit": "0"}, "limit_exceeded", "limit"),
        ({"limit": "1001"}, "limit_exceeded", "limit"),
        ({"limit": "99999999999999999999999999"}, "limit_exceeded", "limit"),
        ({"limit": "9" * 5000}, "limit_exceeded", "limit"),
        ({"limit": "-1"}, "invalid_request", "limit"),
        ({"limit": "abc"}, "invalid_request", "limit"),
        ({"limit": "1.5"}, "invalid_request", "limit"),
        ({"limit": " 5"}, "invalid_request", "limit"),
        ({"limit": "5 "}, "invalid_request", "limit"),
        ({"limit": "+5"}, "invalid_request", "limit"),
        ({"limit": "٥"}, "invalid_request", "limit"),
        ({"limit": "1e3"}, "invalid_request", "limit"),
        ({"offset": "-1"}, "invalid_request", "offset"),
        ({"offset": "x"}, "invalid_request", "offset"),
        ({"offset": "9223372036854775808"}, "invalid_request", "offset"),
        ({"offset": "9" * 100}, "invalid_request", "offset"),
        ({"order": "up"}, "invalid_request", "order"),
        ({"order": "asc;"}, "invalid_request", "order"),
        ({"count": "all"}, "invalid_request", "count"),
        ({"filters": "{"}, "invalid_request", "filters"),
        ({"filters": "[1]"}, "invalid_request", "filters"),
        ({"filters": "null"}, "invalid_request", "filters"),
        ({"filters": "3"}, "invalid_request", "filters"),
        ({"filters": "NaN"}, "invalid_request", "filters"),
        ({"filters": '{"age": NaN}'}, "invalid_request", "filters"),
        ({"filters": '{"age": 1e999}'}, "invalid_request", "filters"),
        ({"filters": '{"name": "' + "x" * 70_000 + '"}'}, "limit_exceeded", "filters"),
        ({"search": "x" * 70_000}, "limit_exceeded", "search"),
    ],
)
def test_bad_query_string_values_are_rejected(args, code, key):
    error = fails(code, parse_read_params, args)
    assert key in error.errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"limit": "5"},
        {"offset": -1},
        {"offset": 2**63},
        {"order": "DESC"},
        {"count": "estimate"},
    ],
)
def test_read_params_check_their_ranges(kwargs):
    with pytest.raises((InvalidRequest, LimitExceeded)):
        ReadParams(**kwargs)


def test_offset_beyond_int4_works(engine, table):
    assert fetch(engine, table, offset=2**40) == []


# --- counts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "predicate"),
    [
        ({}, lambda r: True),
        ({"filters": {"age": {"gte": 40}}}, lambda r: _age(r) >= 40),
        ({"search": "jo"}, lambda r: _anywhere(r, "jo")),
        ({"filters": {"age": {"gte": 40}}, "limit": 2, "offset": 3}, lambda r: _age(r) >= 40),
    ],
)  # fmt: skip
def test_exact_count_counts_every_matching_row(engine, table, rows, params, predicate):
    read = compiled(table, **params)
    with engine.connect() as conn:
        counted = conn.execute(read.count, read.values).scalar_one()
    assert counted == len(expected_ids(rows, predicate))


def test_exact_count_ignores_the_cursor(engine, table, cursor):
    params = {"sort_by": "code,-age", "filters": {"age": {"gte": 20}}}
    plain = compiled(table, **params)
    paged = compiled(table, cursor=cursor, **params)
    with engine.connect() as conn:
        with_cursor = conn.execute(paged.count, paged.values).scalar_one()
        assert with_cursor == conn.execute(plain.count, plain.values).scalar_one()


@pytest.mark.parametrize("mode", ["none", "estimated"])
def test_count_none_and_estimated_have_no_count_select(table, mode):
    assert compiled(table, count=mode).count is None


def test_estimated_count_returns_the_planner_rows(engine, table):
    with engine.connect() as conn:
        conn.execute(sa.text(f"ANALYZE {SCHEMA}.items"))  # other tests inserted and deleted rows
        assert estimated_count(conn, compiled(table, count="estimated").estimate) == ROW_COUNT
        filtered = compiled(table, count="estimated", filters={"age": {"in": [29, 40]}})
        guess = estimated_count(conn, filtered)
        assert isinstance(guess, int) and 0 <= guess <= ROW_COUNT
        # A page select works too: its LIMIT and OFFSET are not part of the estimate.
        assert estimated_count(conn, compiled(table, limit=3, offset=2).select) == ROW_COUNT
        # So does the CompiledRead itself, whatever its count mode, and without the cursor.
        assert estimated_count(conn, compiled(table, count="estimated")) == ROW_COUNT
        assert estimated_count(conn, compiled(table, count="exact")) == ROW_COUNT
        read = compiled(table, count="none", sort_by="label")
        last = conn.execute(read.select, read.values).mappings().all()[30]
        paged = compiled(table, sort_by="label", cursor=next_cursor(read, last, cursor_key=KEY))
        assert estimated_count(conn, paged) == ROW_COUNT
        assert estimated_count(conn, compiled(table, filters={"data": {"eq": {"k": 1}}})) >= 0


def test_estimated_count_is_cached_like_any_statement(engine, table):
    reads = [compiled(table, filters={"age": value}, count="estimated") for value in (1, 2, 3)]
    # One estimate statement per shape, shared by the three reads; only the values differ.
    assert reads[0].estimate is not None
    assert all(read.estimate is reads[0].estimate for read in reads)
    assert len({read.values["v0"] for read in reads}) == 3
    explains = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("EXPLAIN"):
            explains.append((statement, parameters, context.cache_hit))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            estimates = [estimated_count(conn, read) for read in reads]
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert all(isinstance(guess, int) and 0 <= guess <= ROW_COUNT for guess in estimates)
    # The same EXPLAIN text each time, values bound as parameters, compiled once: SQLAlchemy's
    # compiled cache serves the second and third (the first may hit too, after other tests).
    assert len(explains) == 3
    assert len({statement for statement, _, _ in explains}) == 1
    assert len({str(parameters) for _, parameters, _ in explains}) == 3
    assert [hit for _, _, hit in explains[1:]] == [CacheStats.CACHE_HIT] * 2


# --- statements -------------------------------------------------------------------------


def _sql(read: CompiledRead) -> str:
    return str(read.select.compile(dialect=postgresql.psycopg.dialect()))


def test_statement_text_depends_on_structure_not_values(table):
    first = compiled(
        table, filters={"age": {"in": [1, 2]}, "name": {"contains": "O'Brien"}}, search="ALICE"
    )
    second = compiled(
        table, filters={"age": {"in": [7, 8, 9]}, "name": {"contains": "z"}}, search="q"
    )
    assert _sql(first) == _sql(second)
    assert "O'Brien" not in _sql(first) and "ALICE" not in _sql(first)
    assert first.select._generate_cache_key() == second.select._generate_cache_key()
    # Built once per shape: the second read reuses the statement, with its own values.
    assert first.select is second.select and first.values != second.values


@pytest.mark.parametrize(
    ("sort_by", "row_value"),
    [("label", True), ("-label", True), ("label,-id", False), ("age", False), ("-code", False)],
)
def test_keyset_uses_a_row_value_comparison_only_for_not_null_keys_in_one_direction(
    engine, table, sort_by, row_value
):
    read = compiled(table, sort_by=sort_by)
    with engine.connect() as conn:
        last = conn.execute(read.select, read.values).mappings().all()[5]
    sql = _sql(compiled(table, sort_by=sort_by, cursor=next_cursor(read, last, cursor_key=KEY)))
    assert ("(helper_query_test.items.label, helper_query_test.items.id)" in sql) is row_value


def test_keyset_statement_text_does_not_carry_the_cursor_values(engine, table):
    texts = set()
    for at in (3, 10):
        read = compiled(table, sort_by="label")
        with engine.connect() as conn:
            last = conn.execute(read.select, read.values).mappings().all()[at]
        texts.add(
            _sql(compiled(table, sort_by="label", cursor=next_cursor(read, last, cursor_key=KEY)))
        )
    assert len(texts) == 1


def test_compile_where_serves_an_export(engine, table, rows):
    where = compile_where(table, TYPES_MAP, {"active": True}, "a")
    with engine.connect() as conn:
        got = conn.execute(sa.select(table.c.id).where(where).order_by(table.c.id)).scalars().all()
    want = expected_ids(
        rows,
        lambda r: r["active"] is True and _anywhere(r, "a"),
    )
    assert got == want
    assert compile_where(table, TYPES_MAP, None, None) is None
    assert compile_where(table, TYPES_MAP, {}, "") is None
