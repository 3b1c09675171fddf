"""The one `Database` object: a pooled SQLAlchemy engine on embedded or external PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from dms.config import is_embedded
from dms.embedded import start_embedded
from dms.engine import jsonvalues


class Database:
    """Carry the engine (no hidden globals): `engine` for transactions, `reader` autocommit."""

    def __init__(self, url: str, *, pool_size: int = 10, statement_timeout_ms: int = 5000) -> None:
        self.url = url
        self.statement_timeout_ms = statement_timeout_ms
        self.engine: Engine = _create(url, pool_size, options="-c TimeZone=UTC")
        # Reads get their own pool: autocommit (no BEGIN/COMMIT round trips on the hot path) and
        # a statement timeout that must never apply to DDL or imports.
        self._read_pool = _create(
            url,
            pool_size,
            options=f"-c TimeZone=UTC -c statement_timeout={int(statement_timeout_ms)}",
        )
        self.reader: Engine = self._read_pool.execution_options(isolation_level="AUTOCOMMIT")

    def ping(self) -> None:
        """Run a trivial query; raises when the database is unreachable."""
        with self.reader.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self._read_pool.dispose()


def _create(url: str, pool_size: int, *, options: str) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a PostgreSQL restart costs one failed request, not a restart
        pool_recycle=3600,
        # Timestamps without a zone mean UTC, whatever the server's default is.
        connect_args={"application_name": "dms", "connect_timeout": 5, "options": options},
        # jsonb numbers come back exact: a big integer or a fraction never turns into a float
        # (or into an integer orjson cannot write).
        json_deserializer=jsonvalues.loads,
    )


def database_url(config: Mapping[str, Any]) -> str:
    """Return the SQLAlchemy URL to use, starting the embedded server when none is configured."""
    if not is_embedded(config):
        url = make_url(str(config["DMS_DATABASE_URL"]))
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    return start_embedded(Path(config["DMS_VAR_DIR"]) / "pg")


def open_database(config: Mapping[str, Any]) -> Database:
    """Return a `Database` for these settings."""
    return Database(
        database_url(config),
        pool_size=int(config["DMS_POOL_SIZE"]),
        statement_timeout_ms=int(config["DMS_STATEMENT_TIMEOUT_MS"]),
    )
