"""Schema endpoints: every type and modifier, hostile names, conflicts, isolation, locks."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import insert, select, text

from dms.engine.locks import hold_table_for_import, release_table_for_import
from tests.conftest import auth_for

ALL_TYPES = {
    "t_text": "text",
    "t_varchar": "varchar(12)",
    "t_int": "integer",
    "t_int2": "int",
    "t_big": "bigint",
    "t_small": "smallint",
    "t_float": "float",
    "t_double": "double",
    "t_real": "real",
    "t_num": "numeric(10,2)",
    "t_dec": "decimal(5,1)",
    "t_bool": "boolean",
    "t_bool2": "bool",
    "t_date": "date",
    "t_ts": "timestamp",
    "t_dt": "datetime",
    "t_tstz": "timestamptz",
    "t_time": "time",
    "t_uuid": "uuid",
    "t_json": "json",
    "t_jsonb": "jsonb",
    "t_email": "email",
}
CANONICAL = {
    "int": "integer",
    "float": "double",
    "real": "double",
    "decimal(5,1)": "numeric(5,1)",
    "bool": "boolean",
    "datetime": "timestamp",
    "json": "jsonb",
}

HOSTILE = [
    "",
    " ",
    "a b",
    "a-b",
    "a;b",
    "x; drop table dms_users",
    "x'--",
    'x"y',
    '"quoted"',
    "a/*b*/",
    "--x",
    "a\x00b",
    "\x00",
    "a\nb",
    "a\tb",
    "1abc",
    "9",
    "$x",
    "a$",
    "a.b",
    "public.x",
    "pg_catalog.pg_authid",
    "dms_users",
    "dms_x",
    "DMS_X",
    "pg_x",
    "Pg_class",
    "select",
    "table",
    "user",
    "order",
    "from",
    "SELECT",
    "x" * 64,
    "é" * 32,
    "caf\u00e9",
    "\u0441ustomer",
    "customer\u202e",
    "\u202ecustomer",
    "ｃustomer",
    "a\u200bb",
    "(x)",
    "x()",
    "*",
    "%",
    "a%b",
    "x\\y",
    "@x",
    "`x`",
    "[x]",
    "x,y",
    "x=y",
]
SYSTEM = ["id", "oid", "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "ID", "Xmin"]


def _error(response, status, code=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["status"] == status
    if code:
        assert body["code"] == code, body
    return body


def _create(client, auth, name="customer", fields=None, **extra):
    return client.post(
        "/schemas/create_table/",
        json={"table_name": name, "fields": fields or {"name": "text"}, **extra},
        headers=auth,
    )


def _pg_class_count(app):
    with app.extensions["dms"].db.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_class")).scalar_one()


def test_every_type_and_alias_round_trips(client, auth):
    response = _create(client, auth, "alltypes", ALL_TYPES)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    got = {c["name"]: c["type"] for c in body["columns"]}
    for name, spec in ALL_TYPES.items():
        assert got[name] == CANONICAL.get(spec, spec)
    described = client.get("/schemas/describe_table/?table_name=alltypes", headers=auth).get_json()
    assert described["columns"] == body["columns"]
    assert [c["name"] for c in body["columns"]] == list(ALL_TYPES)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("text unique", {"unique": True, "nullable": True, "default": None, "index": False}),
        ("text not null", {"unique": False, "nullable": False}),
        ("int required", {"nullable": False}),
        ("int default 0", {"default": 0}),
        ("numeric(6,2) default 2.5", {"default": 2.5}),
        ("boolean default true", {"default": True}),
        ("text default 'it''s'", {"default": "it's"}),
        ("date default '2024-01-01'", {"default": "2024-01-01"}),
        ("int index", {"index": True}),
        ("email unique not null index", {"unique": True, "nullable": False, "index": True}),
        ("INTEGER NOT NULL DEFAULT 7", {"nullable": False, "default": 7}),
    ],
)
def test_modifiers_round_trip_and_apply_in_postgres(app, client, auth, spec, expected):
    body = _create(client, auth, "mods", {"c": spec, "other": "text"}).get_json()
    column = body["columns"][0]
    for key, value in expected.items():
        assert column[key] == value, (spec, column)
    engine = app.extensions["dms"].db.engine
    table = app.extensions["dms"].catalog
    with engine.begin() as conn:
        definition = table.lookup(conn, _user_id(app, auth), "mods")
        if "default" in expected and expected["default"] is not None:
            conn.execute(insert(definition.table).values(other="x"))
            stored = conn.execute(select(definition.table.c.c)).scalar_one()
            assert definition.column("c").type.to_json(stored) is not None
    assert (
        client.delete(
            "/schemas/delete_table/", json={"table_name": "mods"}, headers=auth
        ).status_code
        == 200
    )


def _user_id(app, auth):
    import jwt

    return int(jwt.decode(auth["Authorization"][7:], options={"verify_signature": False})["sub"])


@pytest.mark.parametrize(
    "spec",
    [
        "bogus",
        "text; drop table x",
        "int default now()",
        "int check (x > 0)",
        "varchar",
        "varchar(0)",
        "numeric(3,5)",
        "int default 'abc'",
        "boolean default 3",
        "text unique unique",
        "date default '2024-13-01'",
        "int not",
        "int default",
        "",
        "int default null not null",
        "serial",
        "text references dms_users",
        'text collate "C"',
    ],
)
def test_invalid_types_answer_400_listing_accepted_types(app, client, auth, spec):
    before = _pg_class_count(app)
    body = _error(_create(client, auth, "badtype", {"c": spec}), 400, "invalid_type")
    assert body["errors"]["c"] == [body["message"]]
    if spec.split(" ")[0] in ("bogus", "serial", ""):
        assert "accepted types: text, varchar(n), integer" in body["message"]
    assert _pg_class_count(app) == before


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_names_answer_400_and_change_nothing(app, client, auth, name):
    before = _pg_class_count(app)
    body = _error(_create(client, auth, name), 400, "invalid_name")
    assert "name" in body["message"]
    assert _pg_class_count(app) == before


@pytest.mark.parametrize("name", HOSTILE + SYSTEM)
def test_hostile_column_names_answer_400_and_change_nothing(app, client, auth, name):
    before = _pg_class_count(app)
    _error(_create(client, auth, "hostilecols", {name: "text"}), 400, "invalid_name")
    assert _pg_class_count(app) == before


@pytest.mark.parametrize("name", [None, 5, [], {}, True])
def test_non_string_names_answer_400(client, auth, name):
    _error(_create(client, auth, name), 400)


@pytest.mark.parametrize(
    "path,method,extra",
    [
        ("/schemas/describe_table/", "GET", {}),
        ("/schemas/delete_table/", "DELETE", {}),
        ("/schemas/add_column/", "POST", {"column_name": "c", "column_type": "text"}),
        ("/schemas/remove_column/", "POST", {"column_name": "name"}),
        ("/schemas/rename_column/", "POST", {"column_name": "name", "new_name": "n"}),
        ("/schemas/rename_table/", "POST", {"new_name": "other"}),
        ("/schemas/alter_column/", "POST", {"column_name": "name", "column_type": "text"}),
        ("/schemas/create_index/", "POST", {"columns": ["name"]}),
        ("/schemas/drop_index/", "POST", {"columns": ["name"]}),
    ],
)
@pytest.mark.parametrize("name", ["x;drop", "pg_catalog.pg_authid", "select", ""])
def test_bad_table_name_is_400_on_every_endpoint(client, auth, path, method, extra, name):
    payload = {"table_name": name, **extra}
    if method == "GET":
        response = client.get(path, query_string=payload, headers=auth)
    else:
        response = client.open(path, method=method, json=payload, headers=auth)
    _error(response, 400, "invalid_name")


def test_names_are_case_insensitive(client, auth):
    assert _create(client, auth, "Customer", {"Full_Name": "TEXT"}).status_code == 201
    _error(_create(client, auth, "CUSTOMER"), 409, "table_exists")
    body = client.get("/schemas/describe_table/?table_name=cUsToMeR", headers=auth).get_json()
    assert body["table_name"] == "customer" and body["columns"][0]["name"] == "full_name"
    add = client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": "customer", "column_name": "FULL_NAME", "column_type": "text"},
    )
    _error(add, 409, "column_exists")


def test_every_conflict_answers_409(client, auth):
    _create(client, auth, "a", {"x": "text", "y": "text"})
    _create(client, auth, "b", {"x": "text"})
    _error(_create(client, auth, "a"), 409, "table_exists")
    _error(
        client.post(
            "/schemas/add_column/",
            headers=auth,
            json={"table_name": "a", "column_name": "x", "column_type": "int"},
        ),
        409,
        "column_exists",
    )
    _error(
        client.post(
            "/schemas/rename_column/",
            headers=auth,
            json={"table_name": "a", "column_name": "x", "new_name": "y"},
        ),
        409,
        "column_exists",
    )
    _error(
        client.post(
            "/schemas/rename_table/", headers=auth, json={"table_name": "a", "new_name": "b"}
        ),
        409,
        "table_exists",
    )
    _error(_create(client, auth, "c", {"x": "text", "X": "int"}), 409, "column_exists")


def test_missing_table_and_column_answer_404(client, auth):
    _error(
        client.get("/schemas/describe_table/?table_name=nothere", headers=auth),
        404,
        "table_not_found",
    )
    _create(client, auth, "present", {"x": "text"})
    for path, extra in [
        ("/schemas/remove_column/", {"column_name": "nope"}),
        ("/schemas/rename_column/", {"column_name": "nope", "new_name": "z"}),
        ("/schemas/alter_column/", {"column_name": "nope", "column_type": "int"}),
        ("/schemas/create_index/", {"columns": ["nope"]}),
    ]:
        response = client.post(path, headers=auth, json={"table_name": "present", **extra})
        _error(response, 404, "column_not_found")
    # Non-ASCII names that lower-case to an existing ASCII one (the Kelvin sign to "k") are
    # not that column: removing or renaming by them touches nothing.
    _create(client, auth, "kelvin", {"k": "text", "i": "text"})
    for alias in ("\u212a", "\u0130"):
        for path, extra in [
            ("/schemas/remove_column/", {"column_name": alias}),
            ("/schemas/rename_column/", {"column_name": alias, "new_name": "z"}),
        ]:
            response = client.post(path, headers=auth, json={"table_name": "kelvin", **extra})
            _error(response, 404, "column_not_found")
    body = client.get("/schemas/describe_table/?table_name=kelvin", headers=auth).get_json()
    assert [c["name"] for c in body["columns"]] == ["k", "i"]
    _error(
        client.delete("/schemas/delete_table/", json={"table_name": "nothere"}, headers=auth),
        404,
        "table_not_found",
    )


def test_unknown_and_missing_fields_answer_400(client, auth):
    body = _error(
        client.post(
            "/schemas/create_table/",
            headers=auth,
            json={"table_name": "z", "fields": {"a": "text"}, "sql": "x"},
        ),
        400,
        "validation_error",
    )
    assert body["errors"] == {"sql": ["unknown field"]}
    body = _error(
        client.post("/schemas/add_column/", headers=auth, json={"table_name": "z"}),
        400,
        "validation_error",
    )
    assert set(body["errors"]) == {"column_name", "column_type"}
    for fields in ({}, [], "a text", None, 5):
        payload = {"table_name": "z2", "fields": fields}
        _error(client.post("/schemas/create_table/", headers=auth, json=payload), 400)


def test_another_user_can_neither_see_nor_touch_my_table(client, auth, make_user):
    _create(client, auth, "private", {"secret": "text"})
    other = auth_for(client, make_user().username)
    assert client.get("/schemas/list_tables/", headers=other).get_json() == {"tables": []}
    checks = [
        ("GET", "/schemas/describe_table/", {}),
        ("DELETE", "/schemas/delete_table/", {}),
        ("POST", "/schemas/add_column/", {"column_name": "c", "column_type": "text"}),
        ("POST", "/schemas/remove_column/", {"column_name": "secret"}),
        ("DELETE", "/schemas/remove_column/", {"column_name": "secret"}),
        ("POST", "/schemas/rename_column/", {"column_name": "secret", "new_name": "n"}),
        ("POST", "/schemas/rename_table/", {"new_name": "mine"}),
        ("POST", "/schemas/alter_column/", {"column_name": "secret", "column_type": "int"}),
        ("POST", "/schemas/create_index/", {"columns": ["secret"]}),
        ("POST", "/schemas/drop_index/", {"columns": ["secret"]}),
    ]
    me = client.get("/schemas/describe_table/?table_name=private", headers=auth).get_json()
    for method, path, extra in checks:
        payload = {"table_name": "private", **extra}
        for with_owner in (False, True):
            if with_owner:
                payload["owner"] = me["owner"]
            if method == "GET":
                response = client.get(path, query_string=payload, headers=other)
            else:
                response = client.open(path, method=method, json=payload, headers=other)
            _error(response, 404, "table_not_found")
    # and the other user may own a table of the same name
    assert _create(client, other, "private", {"mine": "int"}).status_code == 201
    assert (
        client.get("/schemas/describe_table/?table_name=private", headers=auth).get_json()[
            "columns"
        ][0]["name"]
        == "secret"
    )


def test_admin_lists_every_table_and_acts_for_an_owner(client, auth, make_user):
    _create(client, auth, "owned", {"x": "text"})
    owner = client.get("/schemas/describe_table/?table_name=owned", headers=auth).get_json()[
        "owner"
    ]
    admin = auth_for(client, make_user(admin=True).username)
    listed = client.get("/schemas/list_tables/", headers=admin).get_json()["tables"]
    assert any(t["owner"] == owner and t["table_name"] == "owned" for t in listed)
    _error(client.get("/schemas/describe_table/?table_name=owned", headers=admin), 404)
    response = client.post(
        "/schemas/add_column/",
        headers=admin,
        json={"table_name": "owned", "column_name": "y", "column_type": "int", "owner": owner},
    )
    assert response.status_code == 200 and response.get_json()["owner"] == owner
    _error(
        client.get("/schemas/describe_table/?table_name=owned&owner=nobody_at_all", headers=admin),
        404,
        "user_not_found",
    )


def _insert(app, auth, table, rows):
    catalog, engine = app.extensions["dms"].catalog, app.extensions["dms"].db.engine
    with engine.begin() as conn:
        definition = catalog.lookup(conn, _user_id(app, auth), table)
        conn.execute(insert(definition.table), rows)


def _rows(app, auth, table, column):
    catalog, engine = app.extensions["dms"].catalog, app.extensions["dms"].db.engine
    with engine.begin() as conn:
        definition = catalog.lookup(conn, _user_id(app, auth), table)
        return (
            conn.execute(select(definition.table.c[column]).order_by(definition.table.c.id))
            .scalars()
            .all()
        )


def test_alter_column_converts_data(app, client, auth):
    _create(client, auth, "conv", {"n": "text"})
    _insert(app, auth, "conv", [{"n": "1"}, {"n": "22"}, {"n": None}])
    body = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={"table_name": "conv", "column_name": "n", "column_type": "bigint not null default 5"},
    )
    assert body.status_code == 400  # a NULL cannot become not null
    response = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={"table_name": "conv", "column_name": "n", "column_type": "bigint default 5"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["columns"][0] == {
        "name": "n",
        "type": "bigint",
        "unique": False,
        "nullable": True,
        "default": 5,
        "index": False,
    }
    assert _rows(app, auth, "conv", "n") == [1, 22, None]


def test_alter_column_with_an_unconvertible_value_changes_nothing(app, client, auth):
    _create(client, auth, "unconv", {"n": "text"})
    _insert(app, auth, "unconv", [{"n": "1"}, {"n": "two"}, {"n": "3"}, {"n": "4.5"}])
    before = client.get("/schemas/describe_table/?table_name=unconv", headers=auth).get_json()
    response = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={"table_name": "unconv", "column_name": "n", "column_type": "integer"},
    )
    body = _error(response, 400, "validation_error")
    assert "[2, 4]" in body["message"]
    after = client.get("/schemas/describe_table/?table_name=unconv", headers=auth).get_json()
    assert after == before
    assert _rows(app, auth, "unconv", "n") == ["1", "two", "3", "4.5"]
    too_long = client.post(
        "/schemas/alter_column/",
        headers=auth,
        json={"table_name": "unconv", "column_name": "n", "column_type": "varchar(2)"},
    )
    assert _error(too_long, 400)["errors"] == {"n": ["ids [2, 4] do not convert to varchar(2)"]}


def test_adding_not_null_or_unique_columns_follows_postgres_rules(app, client, auth):
    _create(client, auth, "filled", {"x": "text"})
    _insert(app, auth, "filled", [{"x": "a"}, {"x": "b"}])
    add = {"table_name": "filled", "column_name": "req"}
    _error(
        client.post(
            "/schemas/add_column/", headers=auth, json={**add, "column_type": "int not null"}
        ),
        400,
    )
    ok = client.post(
        "/schemas/add_column/", headers=auth, json={**add, "column_type": "int not null default 0"}
    )
    assert ok.status_code == 200
    _error(
        client.post(
            "/schemas/add_column/",
            headers=auth,
            json={
                "table_name": "filled",
                "column_name": "u",
                "column_type": "int unique default 1",
            },
        ),
        409,
        "unique_violation",
    )
    names = [
        c["name"]
        for c in client.get("/schemas/describe_table/?table_name=filled", headers=auth).get_json()[
            "columns"
        ]
    ]
    assert names == ["x", "req"]


def test_rename_remove_and_index_round_trip(app, client, auth):
    _create(client, auth, "life", {"a": "text index", "b": "int", "c": "date"})
    post = lambda path, **kw: client.post(path, headers=auth, json={"table_name": "life", **kw})  # noqa: E731
    assert post("/schemas/create_index/", columns=["b", "c"]).status_code == 200
    _error(post("/schemas/create_index/", columns=["b", "c"]), 409)
    body = post("/schemas/rename_column/", column_name="b", new_name="bb").get_json()
    assert sorted(i["columns"] for i in body["indexes"]) == [["a"], ["bb", "c"]]
    body = post("/schemas/remove_column/", column_name="c").get_json()
    assert [i["columns"] for i in body["indexes"]] == [["a"]]
    body = post("/schemas/drop_index/", columns=["a"]).get_json()
    assert body["indexes"] == [] and body["columns"][0]["index"] is False
    _error(post("/schemas/drop_index/", columns=["a"]), 404)
    body = post("/schemas/rename_table/", new_name="Renamed").get_json()
    assert body["table_name"] == "renamed" and body["version"] >= 5
    deleted = client.delete(
        "/schemas/remove_column/", headers=auth, json={"table_name": "renamed", "column_name": "bb"}
    )
    assert [c["name"] for c in deleted.get_json()["columns"]] == ["a"]


def test_twenty_concurrent_creates_of_one_name_yield_exactly_one_201(app, auth):
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def create() -> None:
        c = app.test_client()
        barrier.wait()
        statuses.append(_create(c, auth, "raced", {"x": "text"}).status_code)

    threads = [threading.Thread(target=create) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 19


def test_ddl_while_an_import_holds_the_table_answers_409_at_once(app, client, auth):
    _create(client, auth, "busy", {"x": "text"})
    engine = app.extensions["dms"].db.engine
    with engine.connect() as conn:
        table_id = app.extensions["dms"].catalog.lookup(conn, _user_id(app, auth), "busy").id
    holder = engine.connect()
    try:
        assert hold_table_for_import(holder, table_id)
        for path, extra in [
            ("/schemas/add_column/", {"column_name": "y", "column_type": "int"}),
            ("/schemas/rename_table/", {"new_name": "quiet"}),
        ]:
            response = client.post(path, headers=auth, json={"table_name": "busy", **extra})
            _error(response, 409, "table_busy")
        _error(
            client.delete("/schemas/delete_table/", json={"table_name": "busy"}, headers=auth),
            409,
            "table_busy",
        )
        release_table_for_import(holder, table_id)
        ok = client.post(
            "/schemas/add_column/",
            headers=auth,
            json={"table_name": "busy", "column_name": "y", "column_type": "int"},
        )
        assert ok.status_code == 200
    finally:
        holder.close()


def test_ddl_waits_at_most_the_lock_timeout_behind_a_reader(make_app, make_user):
    app = make_app(DMS_LOCK_TIMEOUT_MS=300)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    _create(client, auth, "readers", {"x": "text"})
    engine = app.extensions["dms"].db.engine
    with engine.connect() as conn:
        table = app.extensions["dms"].catalog.lookup(conn, _user_id(app, auth), "readers").table
    reader = engine.connect()
    try:
        reader.execute(select(table))  # an open transaction holding ACCESS SHARE
        response = client.post(
            "/schemas/add_column/",
            headers=auth,
            json={"table_name": "readers", "column_name": "y", "column_type": "int"},
        )
        _error(response, 409, "table_busy")
    finally:
        reader.rollback()
        reader.close()


def test_limits_on_columns_and_tables_answer_400(make_app, make_user):
    app = make_app(DMS_MAX_COLUMNS=3, DMS_MAX_TABLES=2)
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    _error(
        _create(client, auth, "wide", {"a": "int", "b": "int", "c": "int", "d": "int"}),
        400,
        "limit_exceeded",
    )
    assert _create(client, auth, "t1", {"a": "int", "b": "int", "c": "int"}).status_code == 201
    _error(
        client.post(
            "/schemas/add_column/",
            headers=auth,
            json={"table_name": "t1", "column_name": "d", "column_type": "int"},
        ),
        400,
        "limit_exceeded",
    )
    assert _create(client, auth, "t2").status_code == 201
    _error(_create(client, auth, "t3"), 400, "limit_exceeded")


def test_another_process_sees_ddl_at_once(make_app, client, auth):
    other = make_app().test_client()
    _create(client, auth, "shared", {"x": "text"})
    assert other.get("/schemas/describe_table/?table_name=shared", headers=auth).status_code == 200
    client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": "shared", "column_name": "y", "column_type": "int"},
    )
    cols = other.get("/schemas/describe_table/?table_name=shared", headers=auth).get_json()
    assert [c["name"] for c in cols["columns"]] == ["x", "y"]


def test_tables_cli_uses_the_same_validation(app, make_user):
    user = make_user()
    runner = app.test_cli_runner()
    ok = runner.invoke(
        args=[
            "tables",
            "create",
            "Things",
            "name:text not null",
            "qty:int",
            "--user",
            user.username,
        ]
    )
    assert ok.exit_code == 0, ok.output
    assert '"table_name": "things"' in ok.output
    bad = runner.invoke(args=["tables", "create", "x;drop", "a:text", "--user", user.username])
    assert bad.exit_code != 0 and "table name must match" in bad.output
    steps = [
        ["tables", "add-column", "things", "price", "numeric(8,2)"],
        ["tables", "rename-column", "things", "qty", "quantity"],
        ["tables", "alter-column", "things", "quantity", "bigint"],
        ["tables", "remove-column", "things", "price"],
        ["tables", "rename", "things", "items"],
        ["tables", "describe", "items"],
    ]
    for args in steps:
        result = runner.invoke(args=[*args, "--user", user.username])
        assert result.exit_code == 0, (args, result.output)
    listed = runner.invoke(args=["tables", "list", "--user", user.username]).output
    assert "items\tname text, quantity bigint" in listed
    assert (
        runner.invoke(args=["tables", "drop", "items", "--yes", "--user", user.username]).exit_code
        == 0
    )
    assert runner.invoke(args=["tables", "list", "--user", user.username]).output == ""
