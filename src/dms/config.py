"""Settings: defaults, then `DMS_*`/`MAIL_*` environment, then test overrides."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "DMS_DATABASE_URL": None,  # None: a private embedded PostgreSQL under DMS_VAR_DIR/pg
    "DMS_BROKER_URL": None,  # None: StubBroker with worker threads in the web process
    "DMS_SECRET_KEY": None,  # None in embedded mode: generated once, kept in DMS_VAR_DIR
    "DMS_VAR_DIR": "var",
    "DMS_ADMIN_USER": "admin",
    "DMS_ADMIN_PASSWORD": None,
    "DMS_MAX_UPLOAD_BYTES": 1 << 30,
    "DMS_MAX_JSON_BYTES": 1 << 20,
    "DMS_ACCESS_TOKEN_MINUTES": 15,
    "DMS_REFRESH_TOKEN_DAYS": 7,
    "DMS_LOGIN_MAX_FAILURES": 10,
    "DMS_LOGIN_WINDOW_SECONDS": 300,
    "DMS_LOCK_TIMEOUT_MS": 2000,
    "DMS_STATEMENT_TIMEOUT_MS": 5000,
    "DMS_MAX_COLUMNS": 200,
    "DMS_MAX_TABLES": 1000,
    "DMS_POOL_SIZE": 10,
    "DMS_INPROCESS_WORKER": True,  # only used when DMS_BROKER_URL is unset
    "DMS_WORKER_THREADS": 2,
    "DMS_WORKER_IDLE_POLL_MS": 50,  # an idle Redis worker asks for work at least this often
    "DMS_PUBLIC_URL": "http://127.0.0.1:8000",
    "DMS_JOB_STALE_SECONDS": 60,  # a running job without a heartbeat this long is re-queued
    "DMS_SWEEP_INTERVAL_SECONDS": 30,
    "DMS_IMPORT_BATCH_ROWS": 20000,  # rows per committed batch (and checkpoint)
    "DMS_IMPORT_MAX_ATTEMPTS": 10,  # runs that stop unfinished (killed, crashed) before failed
    "DMS_MAX_ACTIVE_IMPORTS": 5,  # queued or running imports per user (429 beyond)
    "DMS_CORS_ORIGINS": "",  # comma list of allowed browser origins; empty: CORS off
    "MAIL_SERVER": None,
    "MAIL_PORT": 25,
    "MAIL_USERNAME": None,
    "MAIL_PASSWORD": None,
    "MAIL_USE_TLS": False,
    "MAIL_USE_SSL": False,
    "MAIL_DEFAULT_SENDER": "dms@localhost",
}

_PREFIXES = ("DMS_", "MAIL_")
MIN_SECRET_BYTES = 32


class ConfigError(RuntimeError):
    """Raised when the settings cannot start the service safely."""


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the `DMS_*`/`MAIL_*` settings found in `environ`.

    A setting whose default is a number or a boolean is JSON-decoded (`5`, `0.5`, `true`);
    every other one is kept as written: `MAIL_PASSWORD=12345678` is a password, not a number.
    """
    found: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(_PREFIXES) or key.startswith("DMS_TEST_"):
            continue
        value: Any = raw
        if isinstance(DEFAULTS.get(key), bool | int | float):
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw
            if isinstance(decoded, bool | int | float):
                value = decoded
        found[key] = value
    return found


def build_config(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the effective settings: defaults, then environment, then overrides."""
    config = dict(DEFAULTS)
    config.update(from_environment(os.environ if environ is None else environ))
    config.update(overrides or {})
    config["DMS_VAR_DIR"] = str(Path(config["DMS_VAR_DIR"]).resolve())
    config["DMS_SECRET_KEY"] = _secret_key(config)
    return config


def is_embedded(config: Mapping[str, Any]) -> bool:
    """Return True when the service runs on its private embedded PostgreSQL."""
    return not config.get("DMS_DATABASE_URL")


def _secret_key(config: Mapping[str, Any]) -> str:
    key = config.get("DMS_SECRET_KEY")
    if key:
        if len(str(key).encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"DMS_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")
        return str(key)
    if not is_embedded(config):
        raise ConfigError(
            "DMS_SECRET_KEY is required when DMS_DATABASE_URL is set "
            f"(at least {MIN_SECRET_BYTES} bytes, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    return _stored_secret(Path(config["DMS_VAR_DIR"]))


def _stored_secret(var_dir: Path) -> str:
    """Return the embedded mode's signing key, generating it on first start."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
