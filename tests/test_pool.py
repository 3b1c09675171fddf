"""Pooled connections whose server session died: pinged when idle, one 503 when just used."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dms.db import PING_AFTER_IDLE_S, Database
from tests.conftest import auth_for


def _kill(db: Database, pid: int) -> None:
    # From a connection outside the pools under test (with pool_size=1 it would be the victim).
    with psycopg.connect(plain_url(db.url), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))


def plain_url(url: str) -> str:
    """Return a libpq URL for a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pid(db: Database) -> int:
    with db.reader.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_an_idle_connection_whose_session_died_is_replaced_at_checkout(database_url):
    db = Database(database_url, pool_size=1)
    try:
        first = _pid(db)
        _kill(db, first)
        time.sleep(PING_AFTER_IDLE_S + 0.2)
        assert _pid(db) != first  # no error: the ping found it dead and the pool reconnected
    finally:
        db.dispose()


def test_a_request_right_after_its_session_died_is_answered_on_a_new_one(make_app, make_user):
    # The pooled connection was used a moment ago, so it is not pinged; the token check, the
    # request's first statement, finds it dead and runs again on a new connection.
    app = make_app(DMS_POOL_SIZE=1)
    client = app.test_client()
    headers = auth_for(client, make_user().username)
    db = app.extensions["dms"].db
    assert client.get("/schemas/list_tables/", headers=headers).status_code == 200
    first = _pid(db)
    _kill(db, first)
    response = client.get("/schemas/list_tables/", headers=headers)
    assert response.status_code == 200, response.get_json()
    assert _pid(db) != first


def test_a_write_right_after_its_session_died_succeeds(make_app, make_user):
    # Writes ping every pooled connection: a transaction cannot be retried from the pool.
    app = make_app(DMS_POOL_SIZE=1)
    client = app.test_client()
    headers = auth_for(client, make_user().username)
    db = app.extensions["dms"].db
    with db.engine.connect() as conn:
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    _kill(db, pid)
    body = {"table_name": "after_kill", "fields": {"n": "int"}}
    created = client.post("/schemas/create_table/", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()


def test_readiness_is_not_fooled_by_a_pooled_connection_that_just_died(make_app):
    app = make_app(DMS_POOL_SIZE=1)
    client = app.test_client()
    db = app.extensions["dms"].db
    assert client.get("/readyz").status_code == 200
    with db.engine.connect() as conn:
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    _kill(db, pid)
    assert client.get("/readyz").status_code == 200
