import pytest

from dms.engine.errors import InvalidName
from dms.engine.identifiers import RESERVED_KEYWORDS, SYSTEM_COLUMNS, validate_identifier

KINDS = ["table", "column"]

# (name, fragment of the message that names the broken rule)
HOSTILE_NAMES = [
    ("", "1-63 bytes"),
    ("a" * 64, "1-63 bytes"),
    ("é" * 32, "must match"),  # 64 bytes in UTF-8, 32 characters
    ("a" * 62 + "é", "must match"),  # 64 bytes: multibyte overflow past the limit
    ("naïve", "must match"),
    ("сustomer", "must match"),  # Cyrillic 'с' look-alike
    ("customer\u202e", "must match"),  # RTL override
    ("\u202ecustomer", "must match"),
    ("cust\u200bomer", "must match"),  # zero-width space
    ("\u212aelvin", "must match"),  # Kelvin sign lower-cases to ASCII 'k'
    ("ｃｕｓｔｏｍｅｒ", "must match"),  # full-width letters
    ("a\x00b", "must match"),
    ("\x00", "must match"),
    ("a b", "must match"),
    (" a", "must match"),
    ("a ", "must match"),
    ("a\tb", "must match"),
    ("a\nb", "must match"),
    ('a"b', "must match"),
    ('"a"', "must match"),
    ("a'b", "must match"),
    ("a`b", "must match"),
    ("a;b", "must match"),
    ("x; drop table users", "must match"),
    ("a--b", "must match"),
    ("--", "must match"),
    ("a/*b*/", "must match"),
    ("a-b", "must match"),
    ("a.b", "must match"),
    ("public.x", "must match"),
    ("pg_catalog.pg_authid", "must match"),
    ("a$b", "must match"),
    ("$1", "must match"),
    ("a(b)", "must match"),
    ("a\\b", "must match"),
    ("1abc", "must match"),
    ("9", "must match"),
    ("*", "must match"),
    ("select", "reserved PostgreSQL keyword"),
    ("SELECT", "reserved PostgreSQL keyword"),
    ("table", "reserved PostgreSQL keyword"),
    ("user", "reserved PostgreSQL keyword"),
    ("order", "reserved PostgreSQL keyword"),
    ("Group", "reserved PostgreSQL keyword"),
    ("null", "reserved PostgreSQL keyword"),
    ("current_user", "reserved PostgreSQL keyword"),
    ("system_user", "reserved PostgreSQL keyword"),
    ("dms_x", "must not start with dms_ or pg_"),
    ("DMS_users", "must not start with dms_ or pg_"),
    ("dms_", "must not start with dms_ or pg_"),
    ("pg_x", "must not start with dms_ or pg_"),
    ("pg_authid", "must not start with dms_ or pg_"),
    ("Pg_Class", "must not start with dms_ or pg_"),
]

NON_STRINGS = [123, None, ["a"], ("a",), b"abc", 1.5, True, {"a": 1}, object()]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "rule"), HOSTILE_NAMES)
def test_hostile_names_are_rejected_naming_the_rule(kind, name, rule):
    with pytest.raises(InvalidName) as info:
        validate_identifier(name, kind)
    assert rule in info.value.message
    assert info.value.message.startswith(f"{kind} name")
    assert info.value.code == "invalid_name"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", NON_STRINGS)
def test_non_string_names_are_rejected(kind, value):
    with pytest.raises(InvalidName, match="must be a string"):
        validate_identifier(value, kind)


@pytest.mark.parametrize("name", ["id", "ID", "Id"])
def test_id_is_reserved_for_columns(name):
    with pytest.raises(InvalidName, match="column name 'id' is reserved"):
        validate_identifier(name, "column")


@pytest.mark.parametrize("name", sorted(SYSTEM_COLUMNS) + ["XMIN", "CTid"])
def test_system_columns_are_rejected_for_columns(name):
    with pytest.raises(InvalidName, match=f"'{name.lower()}' is a system column"):
        validate_identifier(name, "column")


@pytest.mark.parametrize("name", ["id", "xmin", "oid", "tableoid"])
def test_column_only_rules_do_not_apply_to_tables(name):
    assert validate_identifier(name, "table") == name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("customer", "customer"),
        ("Customer", "customer"),
        ("CUSTOMER_2024", "customer_2024"),
        ("_private", "_private"),
        ("_", "_"),
        ("a", "a"),
        ("a1", "a1"),
        ("x" * 63, "x" * 63),
        ("selected", "selected"),  # keywords only match whole names
        ("users", "users"),
        ("left", "left"),  # category T (type/function name) keywords are allowed
        ("name", "name"),  # unreserved keyword
        ("dms", "dms"),
        ("pg", "pg"),
        ("pgx", "pgx"),
        ("dmsx_", "dmsx_"),
        ("my_dms_table", "my_dms_table"),
        ("identity", "identity"),
        ("ids", "ids"),
    ],
)
def test_valid_names_are_returned_lower_case(kind, name, expected):
    assert validate_identifier(name, kind) == expected


def test_a_63_byte_name_is_the_longest_accepted():
    assert validate_identifier("A" * 63, "table") == "a" * 63
    with pytest.raises(InvalidName, match="1-63 bytes"):
        validate_identifier("A" * 64, "table")


@pytest.mark.parametrize("kind", ["schema", "", None, "TABLE"])
def test_an_unknown_kind_is_a_programming_error(kind):
    with pytest.raises(ValueError, match="kind must be one of"):
        validate_identifier("customer", kind)


def test_reserved_keywords_are_postgresql_18_category_r():
    assert len(RESERVED_KEYWORDS) == 78
    assert {"select", "table", "user", "order", "system_user", "analyse"} <= RESERVED_KEYWORDS
    assert not {"left", "join", "name", "id", "is"} & RESERVED_KEYWORDS
    assert all(validate_identifier(k + "_", "table") == k + "_" for k in RESERVED_KEYWORDS)


def test_every_reserved_keyword_is_rejected_for_both_kinds():
    for word in RESERVED_KEYWORDS:
        for kind in KINDS:
            with pytest.raises(InvalidName, match="reserved PostgreSQL keyword"):
                validate_identifier(word.upper(), kind)
