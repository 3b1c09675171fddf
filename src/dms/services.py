"""The per-app service container: settings, database, broker, actors and mailer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from flask import current_app, g
from sqlalchemy import Connection

from dms.db import Database
from dms.engine.catalog import Catalog
from dms.engine.ddl import Schemas
from dms.engine.records import Records
from dms.mailer import Mailer

log = logging.getLogger("dms.jobs")


@dataclass
class Services:
    """Everything a request or a job needs, built once by `create_app`."""

    config: dict[str, Any]
    db: Database
    broker: dramatiq.Broker
    actors: dict[str, dramatiq.Actor]
    mailer: Mailer
    catalog: Catalog
    schemas: Schemas
    records: Records
    worker: dramatiq.Worker | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def enqueue(self, actor_name: str, *args: Any, **options: Any) -> None:
        """Send a message for `actor_name`; the database stays the source of truth."""
        self.actors[actor_name].send_with_options(args=args, **options)

    def enqueue_or_defer(self, actor_name: str, *args: Any) -> bool:
        """Send a message, or leave it to the sweep when the broker is down; True if sent."""
        try:
            self.enqueue(actor_name, *args)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the sweep re-sends
            log.warning("broker unavailable, %s%s left to the sweep: %s", actor_name, args, exc)
            return False
        return True

    def readiness_problems(self) -> list[str]:
        """Return what is unreachable (database, broker); empty when ready."""
        problems = []
        try:
            self.db.ping()
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            problems.append("database unreachable")
        client = getattr(self.broker, "client", None)
        if client is not None:
            try:
                client.ping()
            except Exception:  # noqa: BLE001
                problems.append("broker unreachable")
        return problems

    def close(self) -> None:
        """Stop the in-process worker and close pooled connections."""
        sweeper = self.extras.pop("sweeper", None)
        if sweeper is not None:
            sweeper.set()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self.db.dispose()


def services() -> Services:
    """Return the current app's services."""
    return current_app.extensions["dms"]


def read_connection() -> Connection:
    """Return this request's autocommit read connection, checked out once and reused."""
    conn = g.get("dms_read_conn")
    if conn is None:
        # One pool checkout (and one pre-ping) per request, shared by the token check and reads.
        conn = g.dms_read_conn = services().db.reader.connect()
    return conn


def close_read_connection(_exc: BaseException | None = None) -> None:
    """Return the request's read connection to the pool (teardown hook)."""
    conn = g.pop("dms_read_conn", None)
    if conn is not None:
        conn.close()
