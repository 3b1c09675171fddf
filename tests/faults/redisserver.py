"""A private Redis that a test starts, kills and restarts empty (no RDB, no AOF)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.netutil import free_port, wait_until_ready


def redis_server() -> str | None:
    """Return the path of `redis-server` on PATH, or None."""
    return shutil.which("redis-server")


class PrivateRedis:
    """One throwaway `redis-server` on 127.0.0.1:<random port>, controllable by tests."""

    def __init__(self) -> None:
        exe = redis_server()
        if exe is None:
            raise RuntimeError("redis-server is not on PATH")
        self.exe = exe
        self.root = Path(tempfile.mkdtemp(prefix="dms-private-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start an empty server on the same port and wait until it answers PING."""
        argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        what = f"private Redis on port {self.port}"
        wait_until_ready(self._answers, what, timeout=10, interval=0.05, process=self.proc)

    def kill(self) -> None:
        """SIGKILL the server: every queued message is lost, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def running(self) -> bool:
        """Return True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def destroy(self) -> None:
        """Kill the server if it runs and delete its files."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
