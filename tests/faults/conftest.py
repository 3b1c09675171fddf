"""Fault rig: private PostgreSQL and Redis, the API app, real `dramatiq` workers, an SMTP sink.

Every server here is started by the tests themselves, so stopping, killing or pausing one never
touches the shared PostgreSQL or Redis. Each test gets its own database (a copy of a migrated
template) and an empty Redis, and reads its measurements back through the `measure` fixture.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from dms import create_app, migrate
from dms.tables import import_jobs, outbox
from tests.conftest import (
    SECRET,
    SmtpSink,
    WorkerProcess,
    auth_for,
    insert_user,
    wait_for,
)
from tests.csvfiles import BENCH_FIELDS
from tests.faults.redisserver import PrivateRedis, redis_server
from tests.netutil import accepts
from tests.pgserver import PrivatePostgres, missing_binaries
from tests.scratchdb import create_database, libpq_url, scratch_database, with_database
from tests.test_imports_api import ENDED, multipart

# Small timings so that recovery happens within a test: a job without a heartbeat for 3 s is
# re-queued by a sweep that runs every second, and a 200k-row file commits 40 checkpoints.
FAULT_ENV = {
    "DMS_JOB_STALE_SECONDS": "3",
    "DMS_SWEEP_INTERVAL_SECONDS": "1",
    "DMS_IMPORT_BATCH_ROWS": "5000",
}
TEMPLATE = "dms_fault_template"
_MEASURED = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the `faults` marker (harmless if pyproject registers it too)."""
    config.addinivalue_line("markers", "faults: fault injection with private servers")


@pytest.fixture(scope="session")
def server_binaries() -> None:
    """Check the private servers' binaries first: skip on a laptop without them, fail in CI."""
    missing = missing_binaries()
    if redis_server() is None:
        missing.append("redis-server (not on PATH)")
    if missing:
        reason = f"fault tests need the private servers' binaries; missing: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide them: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def private_pg(server_binaries: None) -> Iterator[PrivatePostgres]:
    """Return a private PostgreSQL cluster holding a migrated template database."""
    server = PrivatePostgres()
    try:
        server.start()
        create_database(server.url, TEMPLATE)
        engine = create_engine(with_database(server.url, TEMPLATE), poolclass=NullPool)
        migrate.upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def private_redis(server_binaries: None) -> Iterator[PrivateRedis]:
    """Return a private Redis server (no persistence: a restart empties it)."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


class Rig:
    """One test's system: API app on the private servers, its user, workers and SMTP sink."""

    def __init__(
        self,
        tmp: Path,
        pg: PrivatePostgres,
        broker: PrivateRedis,
        database_url: str,
        password_hash: str,
    ) -> None:
        self.tmp = tmp
        self.pg = pg
        self.redis = broker
        self.database_url = database_url
        self.smtp = SmtpSink().start()
        self.mail_port = self.smtp.port
        self.workers: list[WorkerProcess] = []
        self.app: Flask = create_app(
            {
                "TESTING": True,
                "DMS_DATABASE_URL": database_url,
                "DMS_SECRET_KEY": SECRET,
                "DMS_VAR_DIR": str(tmp / "api-var"),
                "DMS_BROKER_URL": broker.url,
                "DMS_INPROCESS_WORKER": False,
                "DMS_MAX_ACTIVE_IMPORTS": 20,
                "MAIL_SERVER": None,
                **{k: int(v) for k, v in FAULT_ENV.items()},
            }
        )
        self.svc = self.app.extensions["dms"]
        self.engine = self.svc.db.engine
        username = f"fault_{uuid.uuid4().hex[:8]}"
        self.user_id = insert_user(self.engine, username, password_hash).id
        self.client: FlaskClient = self.app.test_client()
        self.auth = auth_for(self.client, username)

    # --- processes ------------------------------------------------------------------------

    def worker(self, threads: int = 2, mail_port: int | None = None, **env: str) -> WorkerProcess:
        """Start a worker on the private servers, mailing to `mail_port` (the sink's)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DMS_", "MAIL_"))}
        full = {
            **base,
            "DMS_BROKER_URL": self.redis.url,
            "DMS_DATABASE_URL": self.database_url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_VAR_DIR": str(self.tmp / "worker-var"),
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(mail_port or self.mail_port),
            **FAULT_ENV,
            **env,
        }
        log = self.tmp / f"worker{len(self.workers)}.log"
        self.workers.append(WorkerProcess(full, threads, log))
        return self.workers[-1]

    def close(self) -> None:
        """Stop workers, the SMTP sink and the app; print the worker logs' tails."""
        for worker in self.workers:
            worker.stop_or_kill()
        self.smtp.stop()
        self.svc.close()
        for worker in self.workers:
            print(f"--- {worker.log.name} (last lines)")
            print("\n".join(worker.text().splitlines()[-40:]))

    # --- API ------------------------------------------------------------------------------

    def make_table(self, name: str = "people") -> None:
        """Create `name` with the benchmark columns (email unique)."""
        response = self.client.post(
            "/schemas/create_table/",
            headers=self.auth,
            json={"table_name": name, "fields": BENCH_FIELDS},
        )
        assert response.status_code == 201, response.get_json()

    def upload(self, data: bytes, table: str = "people") -> str:
        """Upload `data` into `table` and return the job id."""
        return self.upload_with(data, table_name=table)

    def upload_with(self, data: bytes, **fields: str) -> str:
        """Upload `data` with form `fields` (table_name defaults to people); return the job id."""
        response = self.client.post(
            "/import/upload/",
            data=multipart({"table_name": "people", **fields}, data),
            headers=self.auth,
            content_type="multipart/form-data; boundary=dmsboundary7",
        )
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["job_id"])

    def api_job(self, job_id: str) -> dict[str, Any]:
        """Return the job as GET /import/jobs/<id>/ shows it (the database must be up)."""
        response = self.client.get(f"/import/jobs/{job_id}/", headers=self.auth)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    def wait_running(self, job_id: str, min_rows: int = 1, timeout: float = 60) -> dict[str, Any]:
        """Wait until the job has committed `min_rows` rows and is still running."""

        def running() -> dict[str, Any] | None:
            job = self.api_job(job_id)
            assert job["status"] not in ENDED, f"ended before the fault: {job}"
            return job if job["status"] == "running" and job["rows_processed"] >= min_rows else None

        return dict(wait_for(running, timeout=timeout, interval=0.01))

    def wait_job(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until the job has ended and return it."""

        def ended() -> dict[str, Any] | None:
            job = self.api_job(job_id)
            return job if job["status"] in ENDED else None

        return dict(wait_for(ended, timeout=timeout, interval=0.1))

    # --- the database, directly -----------------------------------------------------------

    def job(self, job_id: str) -> Any:
        """Return the job's row (attempts and checkpoint included)."""
        with self.engine.connect() as conn:
            return conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).one()

    def psql(self, query: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        """Run `query` on this test's database (autocommit) and return its rows, if any."""
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def rows(self, table: str = "people") -> tuple[int, int]:
        """Return (rows, distinct emails) in this user's `table`."""
        with self.engine.connect() as conn:
            t = self.svc.catalog.lookup(conn, self.user_id, table).table
            total = conn.execute(select(func.count()).select_from(t)).scalar_one()
            distinct = conn.execute(select(func.count(t.c.email.distinct()))).scalar_one()
        return int(total), int(distinct)

    def mails(self, job_id: str) -> list[Any]:
        """Return the outbox rows of `job_id`."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(outbox).where(outbox.c.job_id == job_id)).all())

    def delivered(self, job_id: str) -> list[Any]:
        """Return the messages about `job_id` that the SMTP sink received."""
        return [
            m
            for m in self.smtp.messages
            if job_id in m.get_payload(decode=True).decode("utf-8", "replace")
        ]

    def assert_imported_once(
        self, job_id: str, table: str, good: int, bad: int, settle: float = 1.5
    ) -> Any:
        """Assert the job ended with exact counts, each good row stored once, one mail sent."""
        job = self.wait_job(job_id)
        status = "completed_with_errors" if bad else "succeeded"
        assert job["status"] == status, job
        assert (job["rows_processed"], job["rows_imported"], job["rows_rejected"]) == (
            good + bad,
            good,
            bad,
        ), job
        assert self.rows(table) == (good, good)
        wait_for(lambda: self.delivered(job_id), timeout=60)
        time.sleep(settle)  # a second delivery, if any, would arrive within a few sweeps
        assert len(self.mails(job_id)) == 1
        assert self.mails(job_id)[0].sent_at is not None
        assert len(self.delivered(job_id)) == 1
        return self.job(job_id)


@pytest.fixture
def rig(
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis,
    password_hash: str,
    tmp_path: Path,
) -> Iterator[Rig]:
    """Return a fresh system on its own database and an empty private Redis."""
    if not accepts(private_pg.port):
        private_pg.start()  # a previous test failed during an outage
    if not private_redis.running():
        private_redis.start()
    with redis.Redis.from_url(private_redis.url) as client:
        client.flushall()
    with scratch_database(private_pg.url, "dms_fault_", template=TEMPLATE) as url:
        system = Rig(tmp_path, private_pg, private_redis, url, password_hash)
        try:
            yield system
        finally:
            system.close()
            # The database is dropped next: bring back whatever the test left stopped.
            if not accepts(private_pg.port):
                private_pg.start()
            if not private_redis.running():
                private_redis.start()


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Return a function recording one measured outcome, printed in the run's summary."""
    found = request.config.stash.setdefault(_MEASURED, [])

    def record(line: str) -> None:
        found.append(f"{request.node.name}: {line}")

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Print what the fault tests measured."""
    found = config.stash.get(_MEASURED, [])
    if found:
        terminalreporter.section("fault measurements")
        for line in found:
            terminalreporter.write_line(line)
