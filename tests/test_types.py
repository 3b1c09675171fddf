import json
import random
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import orjson
import psycopg
import pytest
import sqlalchemy as sa
from marshmallow import Schema, ValidationError
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

from dms.engine.errors import ConversionError, InvalidType
from dms.engine.types import TYPES, ColumnSpec, ColumnType, TypeRegistry, parse_column_spec


def nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- parsing the mini-language ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("text", "text"),
        ("varchar(20)", "varchar(20)"),
        ("VARCHAR(20)", "varchar(20)"),
        ("varchar( 1 )", "varchar(1)"),
        ("varchar(10485760)", "varchar(10485760)"),
        ("integer", "integer"),
        ("int", "integer"),
        ("INT", "integer"),
        ("bigint", "bigint"),
        ("smallint", "smallint"),
        ("float", "double"),
        ("double", "double"),
        ("Double", "double"),
        ("real", "double"),
        ("numeric(10,2)", "numeric(10,2)"),
        ("numeric(10, 2)", "numeric(10,2)"),
        ("DECIMAL(5,0)", "numeric(5,0)"),
        ("numeric(1000,1000)", "numeric(1000,1000)"),
        ("numeric(7)", "numeric(7,0)"),
        ("numeric", "numeric"),
        ("decimal", "numeric"),
        ("boolean", "boolean"),
        ("bool", "boolean"),
        ("date", "date"),
        ("timestamp", "timestamp"),
        ("datetime", "timestamp"),
        ("timestamptz", "timestamptz"),
        ("time", "time"),
        ("uuid", "uuid"),
        ("json", "jsonb"),
        ("jsonb", "jsonb"),
        ("JSON", "jsonb"),
        ("email", "email"),
        ("  text\t", "text"),
    ],
)
def test_every_type_and_alias_parses_to_its_canonical_spec(text, spec):
    assert TYPES.parse_type(text).spec == spec
    assert parse_column_spec(text) == ColumnSpec(TYPES.parse_type(text))


@pytest.mark.parametrize(
    "text",
    [
        "varchar",
        "varchar()",
        "varchar(0)",
        "varchar(10485761)",
        "varchar(-5)",
        "varchar(2.5)",
        "varchar(1,2)",
        "varchar(n)",
        "varchar(20",
        "numeric(0,0)",
        "numeric(1001,0)",
        "numeric(5,6)",
        "numeric(10,2,1)",
        "numeric(10,)",
        "numeric(,2)",
        "int(5)",
        "text(10)",
        "timestamp(3)",
        "double precision",
        "character varying(5)",
        "serial",
        "money",
        "integer[]",
        "int4",
        "",
        "   ",
    ],
)
def test_bad_types_and_parameters_are_rejected(text):
    with pytest.raises(InvalidType):
        TYPES.parse_type(text)
    with pytest.raises(InvalidType):
        parse_column_spec(text)


MODIFIER_CASES = [
    ("text unique", ColumnSpec(TYPES.parse_type("text"), unique=True)),
    ("text index", ColumnSpec(TYPES.parse_type("text"), index=True)),
    ("text not null", ColumnSpec(TYPES.parse_type("text"), nullable=False)),
    ("text NOT  NULL", ColumnSpec(TYPES.parse_type("text"), nullable=False)),
    ("text required", ColumnSpec(TYPES.parse_type("text"), nullable=False)),
    (
        "int default 0 unique not null index",
        ColumnSpec(TYPES.parse_type("int"), True, False, 0, True, True),
    ),
    (
        "INT INDEX REQUIRED UNIQUE DEFAULT -7",
        ColumnSpec(TYPES.parse_type("int"), True, False, -7, True, True),
    ),
    ("text default null", ColumnSpec(TYPES.parse_type("text"), has_default=True)),
]


@pytest.mark.parametrize(("text", "expected"), MODIFIER_CASES)
def test_modifiers_parse_in_any_order(text, expected):
    assert parse_column_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "default"),
    [
        ("int default 0", 0),
        ("smallint default -32768", -32768),
        ("bigint default '42'", 42),
        ("double default -2.5", -2.5),
        ("float default 1e3", 1000.0),
        ("numeric(10,2) default 2.5", Decimal("2.50")),
        ("numeric(10,2) default '1.005'", Decimal("1.01")),
        ("numeric default 12345678901234567890.5", Decimal("12345678901234567890.5")),
        ("boolean default true", True),
        ("bool default FALSE", False),
        ("boolean default 'yes'", True),
        ("text default 'it''s'", "it's"),
        ("text default ''", ""),
        ("text default 'Hello World; drop table x'", "Hello World; drop table x"),
        ("varchar(3) default 'abc'", "abc"),
        ("email default 'a@example.com'", "a@example.com"),
        ("date default '2024-01-01'", date(2024, 1, 1)),
        ("timestamp default '2024-01-01 10:00'", datetime(2024, 1, 1, 10)),
        ("timestamptz default '2024-01-01T10:00:00Z'", datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("time default '10:30'", time(10, 30)),
        (
            "uuid default '123e4567-e89b-12d3-a456-426614174000'",
            uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
        ),
        ("""jsonb default '{"a": [1, null]}'""", {"a": [1, None]}),
        ("json default 5", 5),
        ("json default true", True),
        ("int default null", None),
    ],
)
def test_defaults_are_converted_by_the_column_type(text, default):
    spec = parse_column_spec(text)
    assert spec.has_default
    assert spec.default == default
    assert type(spec.default) is type(default)


@pytest.mark.parametrize(
    "text",
    [
        "int default 1.5",
        "int default 'abc'",
        "smallint default 40000",
        "int default true",
        "boolean default 1",
        "boolean default 'maybe'",
        "text default 5",
        "text default true",
        "varchar(2) default 'abc'",
        "email default 'nope'",
        "date default '2024-02-30'",
        "date default 20240101",
        "timestamp default '2024-01-01 10:00Z'",
        "uuid default 'xyz'",
        "jsonb default '{bad}'",
        "numeric(3,2) default 10",
        "numeric(10,2) default 1e3",
        "double default 'NaN'",
        "int not null default null",
        "int default null not null",
    ],
)
def test_defaults_that_do_not_fit_the_type_are_rejected(text):
    with pytest.raises(InvalidType, match=r"does not fit"):
        parse_column_spec(text)


@pytest.mark.parametrize(
    "text",
    [
        "text; drop table x",
        "text default now()",
        "text default current_timestamp",
        "int check (x > 0)",
        "int references users(id)",
        "int primary key",
        "int unique unique",
        "int not null required",
        "int index index",
        "int default 1 default 2",
        "int default",
        "int not",
        "int not unique",
        "int null",
        'text collate "C"',
        "text -- comment",
        "text /* comment */",
        "text default 'a' || 'b'",
        "text default E'\\x41'",
        "text default $$x$$",
        "text default 'unterminated",
        "int default 5abc",
        "int default 1.2.3",
        "text, int",
        "text)",
        "(text)",
        "int generated always as identity",
        "text default 'x'::text",
        "text\x00",
        "text\u00a0unique",
        "tеxt",  # Cyrillic 'е'
        "int unique; drop table users; --",
        "serial primary key",
        "int default (1)",
    ],
)
def test_raw_sql_and_junk_are_rejected_with_the_accepted_list(text):
    with pytest.raises(InvalidType) as info:
        parse_column_spec(text)
    assert "accepted types: text, varchar(n), integer, int," in info.value.message
    assert "modifiers: unique, not null, required, default <literal>, index" in info.value.message
    assert "varchar(n)" in info.value.detail["accepted_types"]
    assert info.value.code == "invalid_type"


@pytest.mark.parametrize("value", [None, 5, ["text"], b"text", {"type": "text"}])
def test_a_spec_that_is_not_a_string_is_rejected(value):
    with pytest.raises(InvalidType, match="must be a string"):
        parse_column_spec(value)


def test_parse_type_takes_no_modifiers():
    with pytest.raises(InvalidType, match="unexpected 'unique' after the type"):
        TYPES.parse_type("text unique")


def test_the_registry_refuses_a_duplicate_name_or_alias():
    registry = TypeRegistry()
    registry.register("text", TYPES.parse_type("text").__class__)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("text", TYPES.parse_type("email").__class__)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("email", TYPES.parse_type("email").__class__, "text")
    assert registry.accepted() == ["text"]
    with pytest.raises(InvalidType, match="unknown type 'email'"):
        parse_column_spec("email", registry)


def test_accepted_lists_every_type_and_alias():
    assert (
        TYPES.accepted()
        == (
            "text varchar(n) integer int bigint smallint double float real numeric(p,s) "
            "decimal(p,s) boolean bool date timestamp datetime timestamptz time uuid jsonb json "
            "email"
        ).split()
    )


def test_describe_gives_the_api_shape():
    spec = parse_column_spec("numeric(10,2) unique not null default 2.5 index")
    described = spec.describe("price")
    assert orjson.dumps(described) == (
        b'{"name":"price","type":"numeric(10,2)","unique":true,"nullable":false,'
        b'"default":2.50,"index":true}'
    )
    assert parse_column_spec("date default '2024-01-01'").describe("d")["default"] == "2024-01-01"
    assert parse_column_spec("text").describe("t") == {
        "name": "t",
        "type": "text",
        "unique": False,
        "nullable": True,
        "default": None,
        "index": False,
    }


DDL = {
    "text": "TEXT",
    "varchar(20)": "VARCHAR(20)",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "smallint": "SMALLINT",
    "double": "DOUBLE PRECISION",
    "numeric(10,2)": "NUMERIC(10, 2)",
    "numeric": "NUMERIC",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITHOUT TIME ZONE",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "time": "TIME WITHOUT TIME ZONE",
    "uuid": "UUID",
    "jsonb": "JSONB",
    "email": "TEXT",
}


@pytest.mark.parametrize(("spec", "ddl"), DDL.items())
def test_each_type_has_its_postgresql_column_type(spec, ddl):
    assert TYPES.parse_type(spec).sa_type().compile(dialect=postgresql.dialect()) == ddl


def test_search_and_order_capabilities():
    searchable = {s for s in DDL if TYPES.parse_type(s).searchable}
    assert searchable == {"text", "varchar(20)", "email"}
    assert [s for s in DDL if not TYPES.parse_type(s).orderable] == ["jsonb"]


def test_types_compare_by_name_and_parameters():
    assert TYPES.parse_type("varchar(5)") == TYPES.parse_type("VARCHAR( 5 )")
    assert TYPES.parse_type("varchar(5)") != TYPES.parse_type("varchar(6)")
    assert TYPES.parse_type("text") != TYPES.parse_type("email")
    assert len({TYPES.parse_type(t) for t in ["int", "integer", "INT", "bigint"]}) == 2
    assert repr(TYPES.parse_type("decimal(4,1)")) == "<ColumnType numeric(4,1)>"
    assert isinstance(TYPES.parse_type("int"), ColumnType)


# --- converters: CSV cells -------------------------------------------------------------

D = Decimal
UTC2 = timezone(timedelta(hours=2))
# spec -> [(CSV text, Python value it stands for)]; every pair is also checked in PostgreSQL.
# fmt: off
CSV_ACCEPTED = {
    "smallint": [("0", 0), ("-0", 0), ("+5", 5), ("007", 7), ("32767", 32767), ("-32768", -32768)],
    "integer": [("2147483647", 2**31 - 1), ("-2147483648", -(2**31)), ("42", 42)],
    "bigint": [("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63))],
    "double": [
        ("0", 0.0), ("-0", -0.0), ("1.5", 1.5), ("-2.5e10", -2.5e10), ("1E+3", 1000.0),
        ("1.", 1.0), (".5", 0.5), ("+.5e-3", 0.0005), ("1e308", 1e308), ("5e-324", 5e-324),
        ("1.7976931348623157e308", 1.7976931348623157e308), ("1e-310", 1e-310),
        ("0e-400", 0.0), ("0.1", 0.1), ("123456789012345678901234567890", 1.2345678901234568e29),
    ],
    "numeric(10,2)": [
        ("0", D("0.00")), ("1", D("1.00")), ("-1.5", D("-1.50")), ("99999999.99", D("99999999.99")),
        ("0.005", D("0.01")), ("1.234", D("1.23")), ("-1.235", D("-1.24")), ("00012.30", D("12.3")),
        (".5", D("0.5")), ("5.", D("5")), ("+3", D("3")), ("-0.001", D("0")),
        ("99999999.994999", D("99999999.99")),
    ],
    "numeric(3,3)": [("0.999", D("0.999")), ("-0.9994", D("-0.999")), ("0", D("0"))],
    "numeric": [
        ("123456789012345678901234567890.123456789", D("123456789012345678901234567890.123456789")),
        ("-0.000000000000000000001", D("-1E-21")), ("-0", D("0")),
    ],
    "boolean": [
        ("true", True), ("TRUE", True), ("True", True), ("t", True), ("T", True), ("yes", True),
        ("YES", True), ("on", True), ("On", True), ("1", True), ("false", False), ("f", False),
        ("no", False), ("off", False), ("OFF", False), ("0", False), ("F", False),
    ],
    "date": [
        ("2024-01-01", date(2024, 1, 1)), ("2024-02-29", date(2024, 2, 29)),
        ("2000-02-29", date(2000, 2, 29)), ("0001-01-01", date(1, 1, 1)),
        ("9999-12-31", date(9999, 12, 31)), ("2023-04-30", date(2023, 4, 30)),
    ],
    "timestamp": [
        ("2024-01-01 10:00", datetime(2024, 1, 1, 10)),
        ("2024-01-01T10:00:00", datetime(2024, 1, 1, 10)),
        ("2024-01-01 23:59:59.999999", datetime(2024, 1, 1, 23, 59, 59, 999999)),
        ("2024-02-29 00:00:00.5", datetime(2024, 2, 29, 0, 0, 0, 500000)),
        ("0001-01-01 00:00", datetime(1, 1, 1)),
        ("9999-12-31T23:59:59.000001", datetime(9999, 12, 31, 23, 59, 59, 1)),
    ],
    "timestamptz": [
        ("2024-01-01 10:00", datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("2024-01-01 10:00Z", datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("2024-01-01T10:00:00+02", datetime(2024, 1, 1, 10, tzinfo=UTC2)),
        ("2024-01-01T10:00:00+02:00", datetime(2024, 1, 1, 8, tzinfo=UTC)),
        ("2024-01-01 10:00-05:30", datetime(2024, 1, 1, 15, 30, tzinfo=UTC)),
        ("2024-01-01 10:00+0530", datetime(2024, 1, 1, 4, 30, tzinfo=UTC)),
        ("2024-06-30 23:59:59.123+14:00", datetime(2024, 6, 30, 9, 59, 59, 123000, tzinfo=UTC)),
        ("0001-01-01 00:00-01", datetime(1, 1, 1, 1, tzinfo=UTC)),
        ("9999-12-31 20:00+01", datetime(9999, 12, 31, 19, tzinfo=UTC)),
        ("0001-01-01 00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ],
    "time": [
        ("00:00", time(0)), ("23:59", time(23, 59)), ("12:34:56", time(12, 34, 56)),
        ("12:34:56.789", time(12, 34, 56, 789000)), ("23:59:59.999999", time(23, 59, 59, 999999)),
    ],
    "uuid": [
        ("123e4567-e89b-12d3-a456-426614174000", uuid.UUID("123e4567-e89b-12d3-a456-426614174000")),
        ("123E4567-E89B-12D3-A456-426614174000", uuid.UUID("123e4567-e89b-12d3-a456-426614174000")),
        ("00000000-0000-0000-0000-000000000000", uuid.UUID(int=0)),
    ],
    "jsonb": [
        ('{"a": 1}', {"a": 1}), ('[1, 2.5, "x", null, true]', [1, 2.5, "x", None, True]),
        ('"text"', "text"), ("1", 1), ("-0", 0), ("1e300", 1e300), ("1.5E-7", 1.5e-7),
        ("null", None), ('{"a": {"b": []}}', {"a": {"b": []}}), ('"\\u00e9"', "é"),
        ('"😀"', "😀"), ('"\\ud83d\\ude00"', "😀"), (' {"a":1} ', {"a": 1}),
        ('{"a":1,"a":2}', {"a": 2}), ('"a\\\\u0000"', "a\\u0000"), ('"tab\\there"', "tab\there"),
        ("[" * 100 + "]" * 100, nested(100)), ("1" + "0" * 300, 10**300),
    ],
    "text": [
        ("hello", "hello"), ("a\tb\nc\\d\r", "a\tb\nc\\d\r"), ("é", "é"), ("😀", "😀"),
        ("'; drop table x; --", "'; drop table x; --"), ("\\N", "\\N"), ("\\.", "\\."),
        ("\u202e", "\u202e"), (" padded ", " padded "), ('"quoted"', '"quoted"'),
    ],
    "varchar(5)": [("abcde", "abcde"), ("ééééé", "ééééé"), ("😀" * 5, "😀" * 5), ("a", "a")],
    "email": [
        ("user@example.com", "user@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"), ("UPPER@EXAMPLE.COM", "UPPER@EXAMPLE.COM"),
        ("a@b.io", "a@b.io"),
    ],
}

CSV_REJECTED = {
    "smallint": ["32768", "-32769", "1" * 101],
    "integer": [
        "", " 1", "1 ", "1_000", "1.0", "1e3", "0x1F", "٣", "１", "+", "-", "--1", "1-", "abc",
        "1,000", "\t1", "1\n", "+-1", "2147483648", "-2147483649", "0b1", "0o7", "NULL", "1 2",
    ],
    "bigint": ["9223372036854775808", "-9223372036854775809", "1" * 5000],
    "double": [
        "NaN", "nan", "Infinity", "-Infinity", "inf", "1e309", "-1e309", "1e-400", "1_0", "0x10",
        "1,5", "", " 1", "1 ", "1e", "e5", ".", "1.2.3", "٣", "1e+", "+", "0x1p3", "1.5f",
    ],
    "numeric(10,2)": [
        "123456789", "-123456789", "99999999.995", "1e3", "NaN", "Infinity", "1_0", "", "1,5",
        "٣", ".", "+", "1.2.3", " 1", "0x10", "- 1",
    ],
    "numeric(3,3)": ["1", "0.9995", "-1.0"],
    "numeric": ["1e5", "NaN", "-Infinity", "1" * 131073],
    "boolean": [
        "y", "n", "2", "tru", "", " true", "true ", "ｔｒｕｅ", "null", "-1", "yes!", "ON;",
        "ＹＥＳ", "oN\n", "0.0", "1.0", "+1",
    ],
    "date": [
        "2023-02-29", "2024-13-01", "2024-00-10", "2024-04-31", "0000-01-01", "20240101",
        "2024-1-1", "2024-W01-1", "24-01-01", "2024/01/01", "01/02/2024", "2024-01-01T00:00",
        "2024-01-01 ", "１９９９-01-01", "infinity", "epoch", "today", "10000-01-01",
        "-2024-01-01", "2024-01-01 BC", "2024-001", "2024-01-32", "1900-02-29",
    ],
    "timestamp": [
        "2024-01-01", "2024-01-01 24:00", "2024-01-01 10:60", "2024-01-01 10:00:60",
        "2024-01-01 10:00:00.1234567", "2024-01-01 10:00Z", "2024-01-01 10:00+02",
        "2024-01-01t10:00", "2024-01-01  10:00", "2024-01-01 1:00", "2024-01-01 10",
        "2023-02-29 10:00", "now", "2024-01-01 10:00:00.", "epoch", "infinity",
        "2024-01-01 10:00:00 PST", "20240101T100000", "2024-01-01 10:00:00,5",
    ],
    "timestamptz": [
        "2024-01-01 10:00+15", "2024-01-01 10:00 +02", "2024-01-01 10:00 UTC",
        "2024-01-01 10:00 Europe/Paris", "2024-01-01 10:00+2", "2024-01-01 10:00+02:60",
        "2024-01-01 10:00z", "0001-01-01 00:00+01", "9999-12-31 23:00-02",
        "2024-01-01 10:00:00+02:00:00", "2024-02-30 10:00Z", "2024-01-01", "now",
    ],
    "time": [
        "24:00", "24:00:00", "12:60", "1:00", "12:00:00Z", "12:00+02", "12:00:00.1234567", "12",
        "noon", "allballs", "12:00 PM", "12.00", "", "12:00:", "12:00:00.", "T12:00",
    ],
    "uuid": [
        "{123e4567-e89b-12d3-a456-426614174000}", "123e4567e89b12d3a456426614174000",
        "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
        "g23e4567-e89b-12d3-a456-426614174000", "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
        " 123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b12d3-a456-426614174000", "",
    ],
    "jsonb": [
        "NaN", '{"a": NaN}', "Infinity", "-Infinity", "1e400", "1e-1001", '"\\u0000"',
        '{"\\u0000": 1}', '"\\ud800"', '"\\udc00x"', "{'a': 1}", "{a: 1}", "[1,]", "01", ".5",
        "+1", "", " ", '{"a": 1', "[" * 300 + "]" * 300, '"\x01"', "\ufeff{}", "undefined",
        "1 2", '"\ud800"', "1" + "0" * 1000, "1" * 5000, "[1]x", "tru", "0." + "0" * 1000 + "1",
    ],
    "text": ["a\x00b", "\x00", "\ud800", "ok\udfff"],
    "varchar(5)": ["abcdef", "éééééé", "a\x00"],
    "email": [
        "plainaddress", "@example.com", "user@", "user@localhost", "user@@example.com",
        "user @example.com", "user@exa mple.com", ".user@example.com", "user.@example.com",
        "us..er@example.com", "user@-example.com", "user@example-.com", "user@example.c",
        "usér@example.com", "user@exämple.com", "a" * 65 + "@example.com",
        "a@" + ("b" * 60 + ".") * 5 + "com", "user@example.com\n", "<user@example.com>",
        "user@example..com", "user@[127.0.0.1]", '"quoted"@example.com', "user@example.com ",
        "user@example.123", "",
    ],
}
# fmt: on

CSV_CASES = [(spec, text, value) for spec, pairs in CSV_ACCEPTED.items() for text, value in pairs]


@pytest.mark.parametrize(("spec", "text", "value"), CSV_CASES)
def test_accepted_csv_text_converts_to_its_value(spec, text, value):
    column_type = TYPES.parse_type(spec)
    assert column_type.from_text(text) == value
    assert isinstance(column_type.from_csv(text), str)


@pytest.mark.parametrize(
    ("spec", "text"), [(spec, text) for spec, texts in CSV_REJECTED.items() for text in texts]
)
def test_rejected_csv_text_raises_conversion_error(spec, text):
    column_type = TYPES.parse_type(spec)
    with pytest.raises(ConversionError):
        column_type.from_csv(text)
    with pytest.raises(ConversionError):
        column_type.from_text(text)


@pytest.mark.parametrize(
    ("spec", "text", "output"),
    [
        ("boolean", "YES", "t"),
        ("boolean", "off", "f"),
        ("timestamptz", "2024-01-01 10:00", "2024-01-01 10:00+00"),
        ("timestamptz", "2024-01-01T10:00Z", "2024-01-01T10:00+00"),
        ("timestamptz", "2024-01-01T10:00+02:00", "2024-01-01T10:00+02:00"),
        ("timestamp", "2024-01-01T10:00", "2024-01-01T10:00"),
        ("numeric(10,2)", "1.005", "1.01"),
        ("numeric(10,2)", "1.5", "1.5"),
        ("numeric(5,3)", "0.00000001", "0.000"),
        ("integer", "007", "007"),
        ("jsonb", '{"a": 1}', '{"a": 1}'),
        ("text", "a\tb", "a\tb"),
    ],
)
def test_from_csv_hands_copy_plain_text(spec, text, output):
    assert TYPES.parse_type(spec).from_csv(text) == output


@pytest.mark.parametrize(
    ("spec", "text", "message"),
    [
        ("integer", "x", "not a valid integer"),
        ("smallint", "40000", "out of range for smallint"),
        ("double", "1e999", "out of range for double"),
        ("double", "NaN", "not a valid number"),
        ("numeric(4,2)", "100", "out of range for numeric(4,2)"),
        ("numeric(4,2)", "1e2", "not a valid decimal number"),
        ("boolean", "maybe", "not a valid boolean"),
        ("date", "2024-02-30", "not a valid date (YYYY-MM-DD)"),
        ("timestamp", "2024-01-01 10:00Z", "not a valid timestamp (YYYY-MM-DD HH:MM"),
        ("timestamptz", "0001-01-01 00:00+01", "out of range for timestamptz"),
        ("time", "25:00", "not a valid time (HH:MM[:SS[.ffffff]])"),
        ("uuid", "x", "not a valid UUID"),
        ("jsonb", "{", "not valid JSON"),
        ("jsonb", '"\\u0000"', "must not contain \\u0000"),
        ("jsonb", "[" * 300 + "]" * 300, "nested deeper than 256 levels"),
        ("varchar(20)", "x" * 21, "must be at most 20 characters"),
        ("text", "a\x00", "must not contain NUL"),
        ("email", "x@y", "not a valid email address"),
    ],
)
def test_conversion_errors_are_short_and_user_facing(spec, text, message):
    with pytest.raises(ConversionError) as info:
        TYPES.parse_type(spec).from_csv(text)
    assert message in str(info.value)


# --- converters: JSON values -----------------------------------------------------------

U = "123e4567-e89b-12d3-a456-426614174000"
JSON_ACCEPTED = [
    ("integer", 5, 5),
    ("integer", 3.0, 3),
    ("integer", -(2**31), -(2**31)),
    ("bigint", 2**63 - 1, 2**63 - 1),
    ("double", 1, 1.0),
    ("double", 2.5, 2.5),
    ("double", -1e308, -1e308),
    ("numeric(10,2)", 1, D("1.00")),
    ("numeric(10,2)", 2.5, D("2.50")),
    ("numeric(10,2)", 0.1 + 0.2, D("0.30")),
    ("numeric(10,2)", "12.345", D("12.35")),
    ("numeric(10,2)", "-0.005", D("-0.01")),
    ("numeric(10,2)", 1e-20, D("0.00")),
    ("numeric", 1e16, D("1E+16")),
    ("numeric", 0.1, D("0.1")),
    ("numeric", 10**40, D(10**40)),
    ("boolean", True, True),
    ("boolean", False, False),
    ("date", "2024-01-01", date(2024, 1, 1)),
    ("timestamp", "2024-01-01T10:00:00", datetime(2024, 1, 1, 10)),
    ("timestamptz", "2024-01-01T10:00:00Z", datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ("timestamptz", "2024-01-01 10:00", datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ("timestamptz", "2024-01-01T12:00+02:00", datetime(2024, 1, 1, 10, tzinfo=UTC)),
    ("time", "10:00", time(10)),
    ("uuid", U, uuid.UUID(U)),
    ("jsonb", {"a": [1, 2.5, None, True, "x"]}, {"a": [1, 2.5, None, True, "x"]}),
    ("jsonb", "just a string", "just a string"),
    ("jsonb", None, None),
    ("jsonb", [], []),
    ("text", "x", "x"),
    ("text", "", ""),
    ("varchar(3)", "abc", "abc"),
    ("email", "a@example.com", "a@example.com"),
]

JSON_REJECTED = [
    ("integer", value)
    for value in [True, False, "5", 1.5, None, 2**31, [], {}, float("nan"), float("inf"), 1e300]
] + [
    ("smallint", 40000),
    ("double", True),
    ("double", "1.5"),
    ("double", float("nan")),
    ("double", float("-inf")),
    ("double", 10**400),
    ("double", None),
    ("numeric(10,2)", True),
    ("numeric(10,2)", "1e3"),
    ("numeric(10,2)", float("nan")),
    ("numeric(10,2)", float("inf")),
    ("numeric(10,2)", 10**9),
    ("numeric(10,2)", 1e300),
    ("numeric(10,2)", "abc"),
    ("numeric(10,2)", None),
    ("numeric(10,2)", [1]),
    ("numeric", D("NaN")),
    ("boolean", 1),
    ("boolean", 0),
    ("boolean", "true"),
    ("boolean", None),
    ("date", 20240101),
    ("date", "2024-02-30"),
    ("date", date(2024, 1, 1)),
    ("timestamp", "2024-01-01T10:00:00Z"),
    ("timestamp", 1704103200),
    ("timestamptz", "2024-01-01T10:00:00 UTC"),
    ("time", "10:00:00+02"),
    ("uuid", 123),
    ("uuid", uuid.UUID(U)),
    ("uuid", U.replace("-", "")),
    ("jsonb", {"a": float("nan")}),
    ("jsonb", [float("inf")]),
    ("jsonb", {1: "x"}),
    ("jsonb", {"a": "\x00"}),
    ("jsonb", {"\x00": 1}),
    ("jsonb", ["\ud800"]),
    ("jsonb", ("tuple",)),
    ("jsonb", {"a": {1, 2}}),
    ("jsonb", D("NaN")),  # exact Decimals are JSON numbers (jsonb reads return them); NaN is not
    ("jsonb", 10**1001),
    ("jsonb", nested(300)),
    ("text", 5),
    ("text", None),
    ("text", True),
    ("text", ["a"]),
    ("text", "a\x00"),
    ("varchar(3)", "abcd"),
    ("email", "not an email"),
    ("email", 5),
]


@pytest.mark.parametrize(("spec", "value", "expected"), JSON_ACCEPTED)
def test_accepted_json_values_convert_for_the_driver(spec, value, expected):
    result = TYPES.parse_type(spec).from_json(value)
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(expected, Decimal):
        assert str(result) == str(expected)


@pytest.mark.parametrize(("spec", "value"), JSON_REJECTED)
def test_rejected_json_values_raise_conversion_error(spec, value):
    with pytest.raises(ConversionError):
        TYPES.parse_type(spec).from_json(value)


@pytest.mark.parametrize(
    ("spec", "value", "encoded"),
    [
        (
            "numeric(30,10)",
            D("12345678901234567890.1234567890"),
            b"12345678901234567890.1234567890",
        ),
        ("numeric(10,2)", D("1.50"), b"1.50"),
        ("numeric", D("-0.000000000000000000001"), b"-0.000000000000000000001"),
        ("numeric", D("NaN"), b"null"),
        ("date", date(2024, 1, 1), b'"2024-01-01"'),
        ("timestamp", datetime(2024, 1, 1, 10, 0, 0, 5), b'"2024-01-01T10:00:00.000005"'),
        ("timestamptz", datetime(2024, 1, 1, 10, tzinfo=UTC), b'"2024-01-01T10:00:00+00:00"'),
        ("time", time(10, 30), b'"10:30:00"'),
        ("uuid", uuid.UUID(U), f'"{U}"'.encode()),
        ("jsonb", {"a": [1, None]}, b'{"a":[1,null]}'),
        ("integer", 5, b"5"),
        ("bigint", 2**63 - 1, b"9223372036854775807"),
        ("double", 0.1, b"0.1"),
        ("boolean", True, b"true"),
        ("text", "é", '"é"'.encode()),
        ("email", "a@b.io", b'"a@b.io"'),
    ],
)
def test_to_json_gives_values_orjson_writes_without_loss(spec, value, encoded):
    column_type = TYPES.parse_type(spec)
    assert orjson.dumps(column_type.to_json(value)) == encoded
    assert column_type.to_json(None) is None


ODD_VALUES = [
    None, True, 0, -1, 1.5, 1e308, float("nan"), float("-inf"), "", "x", " ", [], {}, 10**100,
    10**5000, "\x00", D("1.5"), b"x", ("a",), object(), 2**63, "1" * 5000, "9" * 200000,
    "0." + "1" * 20000, "\ud800", "-", "1e999999999",
]  # fmt: skip


@pytest.mark.parametrize("spec", [*DDL, "numeric(1000,0)", "numeric(1000,1000)", "varchar(1)"])
def test_converters_raise_only_conversion_error_on_odd_input(spec):
    column_type = TYPES.parse_type(spec)
    for value in ODD_VALUES:
        converters = [column_type.from_json]
        if isinstance(value, str):
            converters += [column_type.from_csv, column_type.from_text]
        for convert in converters:
            try:
                convert(value)
            except ConversionError:
                pass


def test_parse_column_spec_raises_only_invalid_type_on_junk():
    seeds = [text for text, _ in MODIFIER_CASES] + ["numeric(10,2) default '1.5' unique"]
    for text in mutants(seeds, 5000, random.Random("specs")):
        try:
            assert isinstance(parse_column_spec(text), ColumnSpec)
        except InvalidType as exc:
            assert "\x00" not in exc.message


def test_the_field_turns_conversion_errors_into_field_errors():
    schema = Schema.from_dict(
        {
            "age": TYPES.parse_type("smallint").field(required=True, allow_none=False),
            "price": TYPES.parse_type("numeric(6,2)").field(required=False, allow_none=True),
            "born": TYPES.parse_type("date").field(required=False, allow_none=False),
        }
    )()
    assert schema.load({"age": 30, "price": "9.999", "born": "2000-01-31"}) == {
        "age": 30,
        "price": D("10.00"),
        "born": date(2000, 1, 31),
    }
    assert schema.load({"age": 1, "price": None}) == {"age": 1, "price": None}
    with pytest.raises(ValidationError) as info:
        schema.load({"age": 40000, "price": 1e9, "born": None})
    assert info.value.messages == {
        "age": ["out of range for smallint"],
        "price": ["out of range for numeric(6,2)"],
        "born": ["Field may not be null."],
    }
    with pytest.raises(ValidationError) as info:
        schema.load({"age": "30"})
    assert info.value.messages == {"age": ["not a valid integer"]}
    with pytest.raises(ValidationError) as info:
        schema.load({})
    assert info.value.messages == {"age": ["Missing data for required field."]}
    assert schema.dump({"age": 3, "price": D("1.50"), "born": date(2000, 1, 2)})["born"] == (
        "2000-01-02"
    )


# --- the key property, against a real PostgreSQL ---------------------------------------


def with_driver(url, drivername):
    return make_url(url).set(drivername=drivername).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def database(database_url):
    """Return a connection to the session's database (conftest), in UTC."""
    with psycopg.connect(with_driver(database_url, "postgresql")) as conn:
        # The app runs every session in UTC; naive timestamptz text relies on nothing else.
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


@pytest.fixture
def pg(database):
    yield database
    database.rollback()  # temp tables vanish with the transaction


def sql_type(column_type):
    return column_type.sa_type().compile(dialect=postgresql.dialect())


def copy_and_read_back(pg, column_type, texts):
    """COPY the from_csv output of `texts` into a temp column and return the stored values."""
    pg.execute(f"CREATE TEMP TABLE probe (n int, v {sql_type(column_type)}) ON COMMIT DROP")
    outputs = [column_type.from_csv(text) for text in texts]
    try:
        with pg.transaction(), pg.cursor().copy("COPY probe (n, v) FROM STDIN") as copy:
            for n, output in enumerate(outputs):
                copy.write_row((n, output))
    except psycopg.Error:
        rejected = []
        for output in outputs:  # find every culprit, for a useful failure message
            try:
                with pg.transaction(), pg.cursor().copy("COPY probe (v) FROM STDIN") as copy:
                    copy.write_row((output,))
            except psycopg.Error as exc:
                rejected.append((output, str(exc).splitlines()[0]))
        pytest.fail(f"PostgreSQL rejected converter output for {column_type.spec}: {rejected}")
    return [row[0] for row in pg.execute("SELECT v FROM probe ORDER BY n")]


def exact_json(text):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def assert_round_trip(pg, column_type, texts):
    stored = copy_and_read_back(pg, column_type, texts)
    expected = [column_type.from_text(text) for text in texts]
    if column_type.spec == "jsonb":  # jsonb numbers are exact numerics: compare as Decimal
        stored = [exact_json(row[0]) for row in pg.execute("SELECT v::text FROM probe ORDER BY n")]
        assert stored == [exact_json(text) for text in texts]
        return
    mismatches = [(t, s, e) for t, s, e in zip(texts, stored, expected, strict=True) if s != e]
    assert not mismatches, f"PostgreSQL read back other values for {column_type.spec}"
    for value, want in zip(stored, expected, strict=True):
        assert orjson.dumps(column_type.to_json(value)) == orjson.dumps(column_type.to_json(want))


@pytest.mark.parametrize("spec", CSV_ACCEPTED)
def test_postgresql_stores_every_accepted_csv_value_as_the_same_value(pg, spec):
    assert_round_trip(pg, TYPES.parse_type(spec), [text for text, _ in CSV_ACCEPTED[spec]])


# Characters that break parsers: signs, separators, quotes, escapes, NUL, look-alike digits.
FUZZ_ALPHABET = "0123456789+-.eE:T Z_xfnty,'\"{}[]\\\t\x00é١１\u202e9"


def mutants(seeds, count, rng):
    """Return `count` strings made by inserting, deleting or replacing characters in seeds."""
    result = []
    for _ in range(count):
        chars = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars) + 1)
            operation = rng.randrange(3)
            if operation == 0 or not chars:
                chars.insert(pos, rng.choice(FUZZ_ALPHABET))
            elif operation == 1:
                del chars[min(pos, len(chars) - 1)]
            else:
                chars[min(pos, len(chars) - 1)] = rng.choice(FUZZ_ALPHABET)
        result.append("".join(chars))
    return result


@pytest.mark.parametrize("spec", CSV_ACCEPTED)
def test_fuzzed_values_that_pass_are_stored_by_postgresql_unchanged(pg, spec):
    column_type = TYPES.parse_type(spec)
    seeds = [text for text, _ in CSV_ACCEPTED[spec]] + CSV_REJECTED.get(spec, [])
    seeds = [seed for seed in seeds if len(seed) < 1000]
    passed = []
    for text in mutants(seeds, 3000, random.Random(spec)):
        try:
            column_type.from_csv(text)
        except ConversionError:
            continue
        passed.append(text)
    assert passed
    assert_round_trip(pg, column_type, passed)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("integer", " 42 "),
        ("double", "NaN"),
        ("double", "-Infinity"),
        ("numeric(10,2)", "1e3"),
        ("numeric", "NaN"),
        ("boolean", "y"),
        ("boolean", " true"),
        ("date", "20240101"),
        ("date", "Jan 8, 2024"),
        ("date", "infinity"),
        ("timestamp", "2024-01-01 10:00:00.1234567"),
        ("timestamp", "now"),
        ("timestamp", "2024-01-01 24:00"),
        ("timestamptz", "2024-01-01 10:00 UTC"),
        ("time", "allballs"),
        ("time", "24:00"),
        ("uuid", "{123e4567-e89b-12d3-a456-426614174000}"),
        ("uuid", "123e4567e89b12d3a456426614174000"),
        ("varchar(3)", "ab   "),
        ("text", "\ud800"),
    ],
)
def test_some_values_postgresql_accepts_are_refused_on_purpose(pg, spec, text):
    with pytest.raises(ConversionError):
        TYPES.parse_type(spec).from_csv(text)
    if text.isascii() or spec != "text":
        pg.execute("SELECT %s::" + sql_type(TYPES.parse_type(spec)), [text])


def test_from_json_values_round_trip_through_sqlalchemy(database_url):
    specs = list(DDL)
    # fmt: off
    row = {
        "text": "x", "varchar(20)": "y", "integer": 5, "bigint": 2**63 - 1, "smallint": -3,
        "double": 0.1, "numeric(10,2)": "12.345", "numeric": 1e16, "boolean": True,
        "date": "2024-02-29", "timestamp": "2024-01-01T10:00:00.5",
        "timestamptz": "2024-01-01T12:00+02:00", "time": "23:59:59.999999", "uuid": U,
        "jsonb": {"a": [1, 2.5, None, "é"]}, "email": "a@example.com",
    }
    # fmt: on
    expected = (
        b'{"text":"x","varchar(20)":"y","integer":5,"bigint":9223372036854775807,'
        b'"smallint":-3,"double":0.1,"numeric(10,2)":12.35,"numeric":10000000000000000,'
        b'"boolean":true,"date":"2024-02-29","timestamp":"2024-01-01T10:00:00.500000",'
        b'"timestamptz":"2024-01-01T10:00:00+00:00","time":"23:59:59.999999",'
        b'"uuid":"' + U.encode() + b'","jsonb":{"a":[1,2.5,null,"\xc3\xa9"]},'
        b'"email":"a@example.com"}'
    )
    types = {spec: TYPES.parse_type(spec) for spec in specs}
    columns = [sa.Column(f"c{i}", types[spec].sa_type()) for i, spec in enumerate(specs)]
    table = sa.Table("probe_json", sa.MetaData(), *columns, prefixes=["TEMPORARY"])
    engine = sa.create_engine(with_driver(database_url, "postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TimeZone = 'UTC'")
            conn.execute(CreateTable(table))
            values = {f"c{i}": types[spec].from_json(row[spec]) for i, spec in enumerate(specs)}
            conn.execute(table.insert().values(values))
            stored = conn.execute(sa.select(table)).one()
            conn.rollback()
    finally:
        engine.dispose()
    got = {spec: types[spec].to_json(value) for spec, value in zip(specs, stored, strict=True)}
    assert orjson.dumps(got) == expected
