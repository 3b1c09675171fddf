"""Alembic environment: service tables only; user tables and schemas are never touched."""

from __future__ import annotations

import os
from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool

from dms.tables import metadata

config = context.config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Return True only for what alembic owns: the public schema's `dms_` tables."""
    if type_ == "schema":
        return name in (None, "public")
    if type_ == "table":
        return name is not None and name.startswith("dms_")
    return True


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name,
        compare_type=True,
        compare_server_default=False,
    )


def run_migrations_online() -> None:
    """Run against the connection the caller passed, or the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ["DMS_DATABASE_URL"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL instead of running it."""
    url = config.get_main_option("sqlalchemy.url") or os.environ["DMS_DATABASE_URL"]
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
