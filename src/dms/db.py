"""The one `Database` object: a pooled SQLAlchemy engine on embedded or external PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError

from dms.config import is_embedded
from dms.embedded import start_embedded
from dms.engine import jsonvalues


class Database:
    """Carry the engine (no hidden globals): `engine` for transactions, `reader` autocommit."""

    def __init__(self, url: str, *, pool_size: int = 10, statement_timeout_ms: int = 5000) -> None:
        self.url = url
        # Writes ping every connection they take from the pool: a transaction cut short by a
        # dead connection cannot be retried from here.
        self.engine: Engine = _create_engine(
            url, pool_size, options="-c TimeZone=UTC", pool_pre_ping=True
        )
        # Reads get their own pool: autocommit (no BEGIN/COMMIT round trips on the hot path) and
        # a statement timeout that must never apply to DDL or imports; a request's first read
        # is retried on a new connection when the pooled one is dead (dms.api.identity).
        self._read_pool = _create_engine(
            url,
            pool_size,
            options=f"-c TimeZone=UTC -c statement_timeout={int(statement_timeout_ms)}",
        )
        _ping_idle_connections(self._read_pool)
        self.reader: Engine = self._read_pool.execution_options(isolation_level="AUTOCOMMIT")

    def ping(self) -> None:
        """Run a trivial query; raises when the database is unreachable."""
        # On the write pool, which pings every connection it hands out: a readiness probe must
        # not report a healthy server down because a pooled connection died a moment ago.
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self._read_pool.dispose()


# A connection checked in less than this long ago is not pinged at checkout (see below).
PING_AFTER_IDLE_S = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout unless it worked within PING_AFTER_IDLE_S.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip on every request, a
    tenth of a page read's time. A connection that was in use a moment ago is all but
    certainly alive; should the server have dropped it in that moment, the first statement
    fails, SQLAlchemy renews the pool, and the caller may run it again on a new connection.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _fresh(_dbapi: Any, record: Any) -> None:
        # A new connection needs no ping either (and the pool clears `info` when it reconnects).
        record.info["dms_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("dms_idle_since")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as exc:  # noqa: BLE001 - any failure: the pool reconnects
            # The server most likely restarted: renew every pooled connection, not just this.
            raise InvalidatePoolError(f"pooled connection is gone: {exc}") from exc


def _create_engine(
    url: str, pool_size: int, *, options: str, pool_pre_ping: bool = False
) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=pool_pre_ping,
        max_overflow=pool_size,
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
