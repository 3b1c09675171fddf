"""Views that read one table ask the registry once: token family and table version together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.conftest import auth_for, unique_name

READERS = [
    ("/crud/read_records/", 200),
    ("/crud/export/", 200),
    ("/schemas/describe_table/", 200),
]


@contextmanager
def registry_statements(app) -> Iterator[list[str]]:
    """Collect the registry statements (token families, tables) either pool runs meanwhile."""
    db = app.extensions["dms"].db
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        if "dms_tables" in statement or "dms_token_families" in statement:
            seen.append(statement)

    engines = (db.engine, db._read_pool)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


def make_table(client, auth, name: str) -> None:
    """Create `name` with one column and one record."""
    response = client.post(
        "/schemas/create_table/",
        headers=auth,
        json={"table_name": name, "fields": {"name": "text"}},
    )
    assert response.status_code == 201, response.get_json()
    response = client.post(
        "/crud/create_record/", headers=auth, json={"table_name": name, "data": {"name": "a"}}
    )
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(("path", "status"), READERS)
def test_a_table_read_asks_the_registry_once(app, client, auth, path, status):
    name = unique_name("t")
    make_table(client, auth, name)
    url = f"{path}?table_name={name}"
    assert client.get(url, headers=auth).status_code == status  # definition cached
    with registry_statements(app) as seen:
        response = client.get(url, headers=auth)
    assert response.status_code == status
    assert len(seen) == 1, seen  # the token's family and the table's version, together
    assert "dms_tables" in seen[0] and "dms_token_families" in seen[0]


@pytest.mark.parametrize(("path", "status"), READERS)
def test_a_schema_change_in_between_is_seen_by_the_next_read(app, client, auth, path, status):
    name = unique_name("t")
    make_table(client, auth, name)
    url = f"{path}?table_name={name}"
    assert client.get(url, headers=auth).status_code == status
    added = client.post(
        "/schemas/add_column/",
        headers=auth,
        json={"table_name": name, "column_name": "extra", "column_type": "integer"},
    )
    assert added.status_code == 200, added.get_json()
    response = client.get(url, headers=auth)
    assert response.status_code == status
    body = response.get_data(as_text=True)
    assert "extra" in body  # records carry it (null), the CSV header and definition name it
    if path == "/crud/read_records/":
        assert (
            client.post(
                "/crud/create_record/",
                headers=auth,
                json={"table_name": name, "data": {"extra": 1}},
            ).status_code
            == 201
        )
        records = client.get(url, headers=auth).get_json()["records"]
        assert [r["extra"] for r in records] == [None, 1]


@pytest.mark.parametrize(("path", "status"), READERS)
def test_another_users_table_is_not_found_by_a_table_read(client, auth, make_user, path, status):
    theirs = auth_for(client, make_user().username)
    name = unique_name("t")
    make_table(client, theirs, name)
    response = client.get(f"{path}?table_name={name}", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["code"] == "table_not_found"
