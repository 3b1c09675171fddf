"""The `make run` path, replayed: embedded PostgreSQL, migrate, first admin, serve, import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.netutil import free_port, wait_for_http
from tests.test_imports_api import multipart

pytestmark = pytest.mark.smoke


def _call(
    base: str,
    path: str,
    body: bytes | None = None,
    token: str = "",
    content_type: str = "application/json",
) -> dict:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_make_run_sequence_serves_and_imports_with_the_inprocess_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMS_", "MAIL_"))}
    env.update(
        DMS_VAR_DIR=str(tmp_path / "var"),
        DMS_ADMIN_PASSWORD="admin-password-1",
        DMS_SWEEP_INTERVAL_SECONDS="3600",
    )
    flask = [str(Path(sys.executable).parent / "flask"), "--app", "dms"]
    port = free_port()
    # As the Makefile runs them: it sets DMS_PUBLIC_URL from HOST and PORT, so the printed
    # curl and every link the service gives out name where it listens.
    env["DMS_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    for args in (["db", "upgrade"], ["users", "ensure-admin"]):
        done = subprocess.run([*flask, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert f"curl -s -X POST http://127.0.0.1:{port}/api/token/" in done.stdout
    server = subprocess.Popen(
        [*flask, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/readyz", timeout=60, process=server)
        token = _call(
            base,
            "/api/token/",
            json.dumps({"username": "admin", "password": "admin-password-1"}).encode(),
        )["access"]
        _call(
            base,
            "/schemas/create_table/",
            json.dumps({"table_name": "t", "fields": {"name": "text", "n": "int"}}).encode(),
            token,
        )
        job = _call(
            base,
            "/import/upload/",
            multipart({"table_name": "t"}, b"name,n\na,1\nb,x\nc,3\n"),
            token,
            "multipart/form-data; boundary=dmsboundary7",
        )
        assert job["status_url"] == f"{base}/import/jobs/{job['job_id']}/"
        deadline = time.monotonic() + 60
        while True:
            status = _call(base, f"/import/jobs/{job['job_id']}/", token=token)
            if status["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["status"] == "completed_with_errors"
        assert (status["rows_imported"], status["rows_rejected"]) == (2, 1)
        mail = tmp_path / "var" / "mail"
        deadline = time.monotonic() + 30
        while not list(mail.glob("*.eml")):
            assert time.monotonic() < deadline, "no mail written"
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0  # SIGTERM is a clean exit: atexit ran
    # ...so the embedded PostgreSQL was stopped, not left running.
    assert not (tmp_path / "var" / "pg" / "postmaster.pid").exists()
