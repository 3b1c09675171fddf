"""Loopback helpers for tests that run real servers: free ports, waiting until a server answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Return True when something listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def answers_http(url: str) -> bool:
    """Return True when a GET of `url` answers 2xx or 3xx within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            response.read()
    except urllib.error.HTTPError as exc:  # an error status (503 while starting, say)
        exc.close()  # it holds the response: left to the collector, an unclosed socket
        return False
    except OSError:  # refused or timed out
        return False
    return True


def wait_until_ready(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    interval: float = 0.1,
    process: subprocess.Popen | None = None,
) -> None:
    """Poll `ready` until it is True; raise if `timeout` seconds pass or `process` exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout} s")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 20, process: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:`port`."""
    wait_until_ready(lambda: accepts(port), f"port {port}", timeout, process=process)


def wait_for_http(url: str, timeout: float = 30, process: subprocess.Popen | None = None) -> None:
    """Wait until a GET of `url` answers with a success status."""
    wait_until_ready(lambda: answers_http(url), url, timeout, interval=0.2, process=process)
