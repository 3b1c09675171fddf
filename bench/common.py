"""Shared bench plumbing: a database to measure on, a gunicorn to drive, a user and a token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from dms import migrate
from dms.auth.users import create_user
from dms.embedded import start_embedded

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
PASSWORD = "bench-password-1"


def server_url() -> str:
    """Return a PostgreSQL server URL: DMS_BENCH_DATABASE_URL, else the embedded server."""
    url = os.environ.get("DMS_BENCH_DATABASE_URL") or os.environ.get("DMS_TEST_DATABASE_URL")
    if url:
        return url
    return start_embedded(ROOT / "var" / "bench-pg", database="postgres")


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create a migrated database with a bench user; drop it afterwards."""
    base = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        create_user(engine, "bench", "bench@example.com", PASSWORD)
        yield url
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def plain(url: str) -> str:
    """Return a libpq URL (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def free_port() -> int:
    """Return a free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn(
    database_url: str,
    workers: int = 4,
    extra_env: dict[str, str] | None = None,
    app: str = "dms:create_app()",
    threads: int = 2,
) -> Iterator[str]:
    """Serve `app` under gunicorn with the README's production settings; yield its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DMS_DATABASE_URL": database_url,
        "DMS_SECRET_KEY": SECRET,
        "DMS_INPROCESS_WORKER": "false",
        "DMS_LOGIN_MAX_FAILURES": "1000000",
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-w",
            str(workers),
            # As the README's deployment line: threads keep connections alive between requests.
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def token(base: str) -> str:
    """Log in as the bench user and return an access token."""
    request = urllib.request.Request(
        base + "/api/token/",
        data=json.dumps({"username": "bench", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    return str(json.load(urllib.request.urlopen(request))["access"])


def percentile(values: list[float], fraction: float) -> float:
    """Return the `fraction` percentile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def multipart_file(path: Path, fields: dict[str, str]) -> tuple[Iterator[bytes], int, str]:
    """Return a streamed multipart body (fields, then `path` as `file`), its length and type."""
    boundary = uuid.uuid4().hex
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head.encode()
        with path.open("rb") as handle:
            yield from iter(lambda: handle.read(1 << 20), b"")
        yield tail

    length = len(head.encode()) + path.stat().st_size + len(tail)
    return body(), length, f"multipart/form-data; boundary={boundary}"
