"""Throwaway PostgreSQL databases: created on a server for a test or session, then dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


def libpq_url(url: str, database: str | None = None) -> str:
    """Return SQLAlchemy `url` as a URL psycopg.connect() takes, on `database` if given."""
    plain = make_url(url).set(drivername="postgresql")
    if database is not None:
        plain = plain.set(database=database)
    return plain.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return `url` (driver and credentials kept) pointing at `database`."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_database(
    server_url: str, name: str, template: str | None = None, owner: str | None = None
) -> None:
    """Create database `name` on `server_url`'s server, copying `template`, owned by `owner`."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if owner is not None:
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(statement)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (if it exists), disconnecting whoever still uses it."""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(
    server_url: str, prefix: str, template: str | None = None, owner: str | None = None
) -> Iterator[str]:
    """Create a uniquely named database on `server_url`'s server, yield its URL, then drop it."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    create_database(server_url, name, template=template, owner=owner)
    try:
        yield with_database(server_url, name)
    finally:
        drop_database(server_url, name)
