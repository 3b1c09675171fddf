"""Fixtures: a real PostgreSQL (DMS_TEST_DATABASE_URL or the embedded one), apps, clients, users."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert

from dms import create_app, migrate
from dms.auth.users import User, hash_password
from dms.embedded import start_embedded, stop_embedded
from dms.tables import users
from tests.netutil import free_port
from tests.scratchdb import scratch_database

SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
_counter = itertools.count()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Return a URL to a PostgreSQL server we may create databases on."""
    url = os.environ.get("DMS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: pytest resets its permissions to 0700, which would lock the
    # server (running as its own system user) out of its data directory.
    root = Path(tempfile.mkdtemp(prefix="dms-test-pg-"))
    try:
        yield start_embedded(root / "pg", database="postgres")
    finally:
        stop_embedded(root / "pg")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """Create a fresh, migrated database for this test session and drop it afterwards."""
    with scratch_database(server_url, "dms_test_") as url:
        yield url


def base_config(database_url: str, var_dir: str) -> dict[str, Any]:
    """Return the settings every test app starts from."""
    return {
        "TESTING": True,
        "DMS_DATABASE_URL": database_url,
        "DMS_SECRET_KEY": SECRET,
        "DMS_VAR_DIR": var_dir,
        "DMS_BROKER_URL": None,
        "DMS_INPROCESS_WORKER": False,
        "MAIL_SERVER": None,
        # The session shares one database: a test app's sweep must not pick up other tests'
        # leftovers (tests of the sweep itself set their own threshold).
        "DMS_JOB_STALE_SECONDS": 3600,
    }


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """Return the session's app, on a migrated database."""
    application = create_app(base_config(database_url, str(tmp_path_factory.mktemp("var"))))
    migrate.upgrade(application.extensions["dms"].db.engine)
    yield application
    application.extensions["dms"].close()


@pytest.fixture
def make_app(app: Flask, database_url: str, tmp_path: Any) -> Iterator[Callable[..., Flask]]:
    """Return a factory of extra apps with setting overrides, closed after the test."""
    made: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        config = base_config(database_url, str(tmp_path / f"var{len(made)}"))
        config.update(overrides)
        made.append(create_app(config))
        return made[-1]

    yield factory
    for application in made:
        application.extensions["dms"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the session app."""
    return app.test_client()


def unique_name(prefix: str = "user") -> str:
    """Return a username no other test uses."""
    return f"{prefix}{next(_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def password_hash() -> str:
    """Return PASSWORD's argon2id hash, computed once (hashing is slow on purpose)."""
    return hash_password(PASSWORD)


def insert_user(engine: Engine, username: str, password_hash: str, admin: bool = False) -> User:
    """Insert a user whose password hash is already computed and return it."""
    email = f"{username}@example.com"
    with engine.begin() as conn:
        user_id = conn.execute(
            insert(users)
            .values(username=username, email=email, password_hash=password_hash, is_admin=admin)
            .returning(users.c.id)
        ).scalar_one()
    return User(user_id, username, email, admin)


@pytest.fixture
def make_user(app: Flask, password_hash: str) -> Callable[..., Any]:
    """Return a factory that creates a user with PASSWORD (stored as the real service does)."""

    def factory(admin: bool = False, name: str | None = None) -> User:
        engine = app.extensions["dms"].db.engine
        return insert_user(engine, name or unique_name(), password_hash, admin)

    return factory


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in and return the token pair."""
    response = client.post("/api/token/", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


def auth_for(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in and return Authorization headers with the access token."""
    return bearer(login(client, username, password)["access"])


@pytest.fixture
def auth(client: FlaskClient, make_user: Callable[..., Any]) -> dict[str, str]:
    """Return Authorization headers for a fresh ordinary user."""
    return auth_for(client, make_user().username)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the test Redis URL; skip on a laptop without one, fail in CI."""
    url = os.environ.get("DMS_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set DMS_TEST_REDIS_URL")
        pytest.skip("no DMS_TEST_REDIS_URL (Redis tests run in CI)")
    return url


class SmtpSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

    def __init__(self, port: int | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.port = port or free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Keep the message (aiosmtpd handler hook)."""
        from email import message_from_bytes

        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> SmtpSink:
        """Start listening."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self.controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """Return a running SMTP sink."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A real `dramatiq dms.jobs` process group (killable as a whole), its output logged or not."""

    def __init__(self, env: dict[str, str], threads: int = 2, log: Path | None = None) -> None:
        self.log = log
        exe = str(Path(sys.executable).parent / "dramatiq")
        argv = [exe, "dms.jobs", "--processes", "1", "--threads", str(threads)]
        stderr = subprocess.DEVNULL if log is None else subprocess.STDOUT
        with open(log or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=stderr, start_new_session=True
            )

    def signal(self, signum: int) -> None:
        """Send `signum` to the whole process group (dramatiq's parent and its worker)."""
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def wait_ready(self, timeout: float = 30) -> WorkerProcess:
        """Wait until the worker process has booted (and started its sweeper); needs a log."""
        wait_for(lambda: "ready for action" in self.text(), timeout=timeout)
        return self

    def stop(self, timeout: float = 60) -> None:
        """Stop gracefully (SIGTERM) and wait."""
        self.signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)

    def stop_or_kill(self, grace: float = 8) -> None:
        """Resume if paused, ask to stop, and kill whatever is left after `grace` seconds."""
        if self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        try:
            self.stop(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup runs, as when a host dies."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def text(self) -> str:
        """Return the worker's log so far."""
        if self.log is None:
            raise RuntimeError("this worker's output is not logged (pass log=...)")
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker(
    redis_url: str, database_url: str, tmp_path: Any
) -> Iterator[Callable[..., WorkerProcess]]:
    """Return a factory of real worker processes on Redis; all are stopped after the test."""
    import redis

    with redis.Redis.from_url(redis_url) as client:  # closed: no socket left to the collector
        client.flushdb()
    started: list[WorkerProcess] = []

    def factory(**env: str) -> WorkerProcess:
        full = {
            **os.environ,
            "DMS_BROKER_URL": redis_url,
            "DMS_DATABASE_URL": database_url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_VAR_DIR": str(tmp_path / "worker-var"),
            "DMS_JOB_STALE_SECONDS": "3600",  # other tests' leftovers stay theirs
            **env,
        }
        started.append(WorkerProcess(full))
        return started[-1]

    yield factory
    for worker in started:
        if worker.proc.poll() is None:
            worker.stop()
