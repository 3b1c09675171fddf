"""Column defaults through the registry, imports into defaulted columns, bulk insert order."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text

from dms.engine import ddl
from dms.engine.catalog import Catalog
from dms.engine.ddl import Schemas, default_sql
from dms.engine.importing import run_import
from dms.engine.types import TYPES
from tests.test_importing import upload


def _create(client, auth, name: str, fields: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/schemas/create_table/", headers=auth, json={"table_name": name, "fields": fields}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _defaults(definition: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c["default"] for c in definition["columns"]}


def _records(client, auth, name: str) -> list[dict[str, Any]]:
    response = client.get("/crud/read_records/", headers=auth, query_string={"table_name": name})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["records"]


# --- 1. defaults survive the registry (read back with exact jsonb numbers) ----------------

FRACTIONAL_DEFAULTS = [
    ("double default 2.5", 2.5),
    ("float default 2.5", 2.5),
    ("real default -0.125", -0.125),
    ("double default 1e-7", 1e-7),
    ("double not null default 0.1", 0.1),
    ("double default 3", 3.0),
    ("jsonb default 0.5", 0.5),
    ("json default 0.5", 0.5),
    ('jsonb default \'{"a": 0.5, "b": [1.25, 2]}\'', {"a": 0.5, "b": [1.25, 2]}),
    ("jsonb default '\"text\"'", "text"),
    ("numeric(6,3) default 2.5", 2.5),
    # The DDL's default text holds colons that must not be read as bind parameters.
    ('jsonb default \'{"t": ":x", "u":1}\'', {"t": ":x", "u": 1}),
    ("text default 'at :noon'", "at :noon"),
    ("timestamptz default '2024-01-01 10:00:00+02:00'", "2024-01-01T08:00:00+00:00"),
]


@pytest.mark.parametrize(("column", "expected"), FRACTIONAL_DEFAULTS)
def test_fractional_defaults_create_describe_and_fill_records(client, auth, column, expected):
    created = _create(client, auth, "fr", {"x": column, "n": "text"})
    assert _defaults(created)["x"] == expected
    described = client.get("/schemas/describe_table/?table_name=fr", headers=auth)
    assert described.status_code == 200, described.get_json()
    assert _defaults(described.get_json())["x"] == expected
    stored = client.post(
        "/crud/create_records/",
        headers=auth,
        json={"table_name": "fr", "records": [{"n": "a"}, {}]},
    )
    assert stored.status_code == 201, stored.get_json()
    assert [r["x"] for r in stored.get_json()["records"]] == [expected, expected]
    assert [r["x"] for r in _records(client, auth, "fr")] == [expected, expected]


def test_fractional_defaults_through_add_column_and_alter_column(client, auth):
    _create(client, auth, "later", {"n": "text"})
    added = client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": "later", "column_name": "d", "column_type": "double default 2.5"},
    )
    assert added.status_code == 200, added.get_json()
    assert _defaults(added.get_json())["d"] == 2.5
    altered = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={
            "table_name": "later",
            "column_name": "n",
            "column_type": "jsonb default '{\"k\":0.25}'",
        },
    )
    assert altered.status_code == 200, altered.get_json()
    assert _defaults(altered.get_json()) == {"n": {"k": 0.25}, "d": 2.5}
    stored = client.post(
        "/crud/create_record/", headers=auth, json={"table_name": "later", "data": {}}
    )
    assert stored.status_code == 201, stored.get_json()
    assert _records(client, auth, "later")[0] | {"id": 0} == {"id": 0, "n": {"k": 0.25}, "d": 2.5}


def test_a_jsonb_default_beyond_64_bits_is_described_exactly(client, auth):
    created = _create(client, auth, "wide", {"x": "jsonb default 1e20"})
    response = client.get("/schemas/describe_table/?table_name=wide", headers=auth)
    assert b'"default":100000000000000000000' in response.get_data()
    assert created["version"] == response.get_json()["version"]


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (Decimal("0.1000000000000000000001"), "'0.1000000000000000000001'"),
        ({"a": Decimal("-0.5"), "b": [Decimal("1E-7")]}, '\'{"a":-0.5,"b":[0.0000001]}\''),
        (10**20, "'100000000000000000000'"),
        ({"k": "it's"}, "'{\"k\":\"it''s\"}'"),
        (0.5, "'0.5'"),
    ],
)
def test_a_jsonb_default_sql_is_the_exact_json_number(value, sql):
    rendered = str(default_sql(value, TYPES.parse_type("jsonb")))
    assert rendered == f"CAST({sql} AS JSONB)"


def test_default_text_is_what_the_column_type_reads_back():
    cases = [
        ("double", 1e-7),
        ("numeric", Decimal("1E-7")),
        ("boolean", False),
        ("date", TYPES.parse_type("date").from_text("2024-02-29")),
        ("timestamp", TYPES.parse_type("timestamp").from_text("2024-01-01 10:00:00.5")),
        ("timestamptz", TYPES.parse_type("timestamptz").from_text("2024-01-01 10:00+02")),
        ("time", TYPES.parse_type("time").from_text("23:59:59.000001")),
        ("uuid", uuid.UUID(int=7)),
        ("jsonb", {"a": [Decimal("0.5"), 10**20, None, True]}),
    ]
    for spec, value in cases:
        column_type = TYPES.parse_type(spec)
        back = column_type.from_text(column_type.to_text(value))
        assert back == value, spec
        column_type.from_csv(column_type.to_text(value))


# --- 2. imports into tables with such defaults ---------------------------------------------


def test_import_fills_empty_cells_with_fractional_and_exact_defaults(app, make_user):
    # The app's engine: jsonb (the registry's default_value too) is read with exact numbers.
    engine = app.extensions["dms"].db.engine
    owner = make_user()
    fields = {
        "name": "text",
        "doc": "jsonb default 0.5",
        "meta": 'jsonb default \'{"a": 0.25, "big": 100000000000000000000}\'',
        "ratio": "double default 2.5",
        "price": "numeric(8,3) default 1.125",
        "at": "timestamptz default '2024-01-01 10:00:00+02:00'",
    }
    table = Schemas(engine, Catalog()).create_table(owner.id, "imp", fields)
    data = b'name,doc,meta,ratio,price\na,,,,\nb,[1],"{""x"": 1}",1.5,2\n'
    job_id = upload(engine, owner, table, data)  # as the upload endpoint stores it
    outcome = run_import(engine, Catalog(), job_id)
    assert (outcome.status, outcome.rows_imported, outcome.rows_rejected) == ("succeeded", 2, 0)
    t = table.table
    with engine.connect() as conn:
        got = conn.execute(
            select(t.c.name, t.c.doc, t.c.meta, t.c.ratio, t.c.price, t.c.at).order_by(t.c.id)
        ).all()
    assert [tuple(r[:5]) for r in got] == [
        (
            "a",
            Decimal("0.5"),
            {"a": Decimal("0.25"), "big": Decimal(10**20)},
            2.5,
            Decimal("1.125"),
        ),
        ("b", [1], {"x": 1}, 1.5, Decimal("2.000")),
    ]
    assert {r[5].isoformat() for r in got} == {"2024-01-01T08:00:00+00:00"}


# --- 3. bulk insert ---------------------------------------------------------------------------


def test_bulk_records_come_back_in_input_order(client, auth):
    _create(client, auth, "ordered", {"a": "integer", "b": "integer default 9"})
    records = [{"a": 1}, {"b": 2}, {}, {"a": 3}, {"a": 4, "b": 5}, {}, {"b": 6}, {"a": 7}]
    response = client.post(
        "/crud/create_records/", headers=auth, json={"table_name": "ordered", "records": records}
    )
    assert response.status_code == 201, response.get_json()
    stored = response.get_json()["records"]
    expected = [{"a": None, "b": 9} | r for r in records]
    assert [{"a": r["a"], "b": r["b"]} for r in stored] == expected
    assert len({r["id"] for r in stored}) == len(records)
    by_id = {r["id"]: r for r in _records(client, auth, "ordered")}
    assert [by_id[r["id"]] for r in stored] == stored


def test_records_naming_no_column_are_inserted_in_one_statement(app, client, auth):
    _create(client, auth, "blank", {"a": "integer default 1", "b": "text"})
    engine = app.extensions["dms"].db.engine
    inserts: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT") and ".blank " in statement:
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = client.post(
            "/crud/create_records/",
            headers=auth,
            json={"table_name": "blank", "records": [{}, {}, {"b": "x"}, {}]},
        )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert response.status_code == 201, response.get_json()
    stored = response.get_json()["records"]
    assert [(r["a"], r["b"]) for r in stored] == [(1, None), (1, None), (1, "x"), (1, None)]
    blank_ids = [stored[i]["id"] for i in (0, 1, 3)]
    assert blank_ids == sorted(blank_ids)
    assert len(inserts) == 2  # one for the three empty records, one for the other


def test_empty_records_into_a_table_with_no_user_column(client, auth):
    _create(client, auth, "bare", {"a": "text"})
    removed = client.post(
        "/schemas/remove_column/", headers=auth, json={"table_name": "bare", "column_name": "a"}
    )
    assert removed.status_code == 200, removed.get_json()
    response = client.post(
        "/crud/create_records/", headers=auth, json={"table_name": "bare", "records": [{}, {}]}
    )
    assert response.status_code == 201, response.get_json()
    ids = [r["id"] for r in response.get_json()["records"]]
    assert len(ids) == 2 and ids == sorted(ids)


# --- 4. alter_column without a type change -------------------------------------------------


def _user_id(auth: dict[str, str]) -> int:
    import jwt

    return int(jwt.decode(auth["Authorization"][7:], options={"verify_signature": False})["sub"])


def test_alter_column_keeping_the_type_does_not_scan_the_values(app, client, auth, monkeypatch):
    _create(client, auth, "same", {"x": "double", "s": "text"})
    engine, catalog = app.extensions["dms"].db.engine, app.extensions["dms"].catalog
    with engine.begin() as conn:
        table = catalog.lookup(conn, _user_id(auth), "same").table
        # NaN is a double PostgreSQL stores but the API's converters refuse.
        conn.execute(insert(table), [{"x": 1.5, "s": "1"}, {"x": 2.5, "s": "x"}])
        conn.execute(text(f"UPDATE {table.schema}.\"same\" SET x = 'NaN' WHERE s = 'x'"))
    checked: list[str] = []
    real_check = ddl._check_convertible

    def spy(conn, table, column, target, limit=10):
        checked.append(column)
        return real_check(conn, table, column, target, limit)

    monkeypatch.setattr(ddl, "_check_convertible", spy)
    body = {"table_name": "same", "column_name": "x"}
    for column_type in ("double not null default 0.5", "float unique index", "real"):
        response = client.post(
            "/schemas/alter_column/", headers=auth, json={**body, "column_type": column_type}
        )
        assert response.status_code == 200, response.get_json()
    assert checked == []
    changed = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={"table_name": "same", "column_name": "s", "column_type": "integer"},
    )
    assert changed.status_code == 400 and checked == ["s"]
