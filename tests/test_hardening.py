"""Limits, headers, CORS, the server banner, gunicorn upload limits, least privilege."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from dms import create_app, migrate
from tests.conftest import SECRET, auth_for
from tests.netutil import free_port, wait_for_http
from tests.scratchdb import libpq_url, scratch_database
from tests.test_imports_api import make_table, multipart, upload, wait_job


def test_cors_is_off_by_default(client, auth):
    response = client.get(
        "/schemas/list_tables/", headers={**auth, "Origin": "https://evil.example"}
    )
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allows_only_listed_origins_and_answers_preflights(make_app, make_user):
    app = make_app(DMS_CORS_ORIGINS="https://app.example, https://admin.example")
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    ok = client.get("/schemas/list_tables/", headers={**auth, "Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/schemas/list_tables/", headers={**auth, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/crud/create_record/",
        headers={"Origin": "https://admin.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://admin.example"


def test_authenticated_answers_are_not_cached_and_never_sniffed(client, auth):
    response = client.get("/schemas/list_tables/", headers=auth)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    error = client.get("/schemas/describe_table/?table_name=x", headers=auth)
    assert error.headers["Cache-Control"] == "no-store"


def test_too_many_active_imports_answer_429(make_app, make_user):
    app = make_app(DMS_MAX_ACTIVE_IMPORTS=2)  # no worker: uploads stay queued
    client = app.test_client()
    auth = auth_for(client, make_user().username)
    make_table(client, auth, fields={"name": "text"})
    first = upload(client, auth, b"name\na\n", key="k-a")
    assert first.status_code == 202
    assert upload(client, auth, b"name\nb\n").status_code == 202
    third = upload(client, auth, b"name\nc\n")
    assert third.status_code == 429 and third.get_json()["code"] == "rate_limited"
    assert int(third.headers["Retry-After"]) > 0
    # A repeat of a stored upload is not a new import: its job (or 409), whatever the limit.
    again = upload(client, auth, b"name\na\n", key="k-a")
    assert again.status_code == 200 and again.get_json()["job_id"] == first.get_json()["job_id"]
    other = upload(client, auth, b"name\nz\n", key="k-a")
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_conflict"


@pytest.fixture
def served(database_url, tmp_path):
    """Run the real servers as subprocesses: gunicorn and `flask --app dms serve`."""
    procs: list[subprocess.Popen] = []

    def start(kind: str, **env: str) -> str:
        port = free_port()
        full = {
            **os.environ,
            "DMS_DATABASE_URL": database_url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_VAR_DIR": str(tmp_path / "var"),
            "DMS_INPROCESS_WORKER": "false",
            **env,
        }
        bindir = Path(sys.executable).parent
        if kind == "gunicorn":
            cmd = [
                str(bindir / "gunicorn"),
                "-w",
                "1",
                "-k",  # the README's production worker class
                "gthread",
                "--threads",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "dms:create_app()",
            ]
        else:
            cmd = [str(bindir / "flask"), "--app", "dms", "serve", "--port", str(port)]
        procs.append(
            subprocess.Popen(
                cmd,
                env=full,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/healthz", timeout=30, process=procs[-1])
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["gunicorn", "serve"])
def test_no_server_banner_with_versions(served, kind):
    with urllib.request.urlopen(served(kind) + "/healthz") as response:  # closed: no stray socket
        server = response.headers.get("Server", "")
    assert not any(ch.isdigit() for ch in server), server


def _token(base: str, username: str) -> str:
    request = urllib.request.Request(
        base + "/api/token/",
        data=json.dumps({"username": username, "password": "correct horse battery"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["access"]


def test_upload_limit_holds_under_gunicorn_with_and_without_content_length(
    served, make_user, client
):
    base = served("gunicorn", DMS_MAX_UPLOAD_BYTES="100000")
    user = make_user()
    token = _token(base, user.username)
    make_table(client, auth_for(client, user.username), fields={"name": "text"})
    body = multipart({"table_name": "people"}, b"name\n" + b"row\n" * 60_000)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "multipart/form-data; boundary=dmsboundary7",
    }
    host = base.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/import/upload/", body=body, headers=headers)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "payload_too_large"
    conn.close()  # gthread keeps connections alive: close what the test opened
    chunked = http.client.HTTPConnection(host, timeout=30)
    chunked.request(
        "POST",
        "/import/upload/",
        body=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
        headers=headers,
        encode_chunked=True,
    )
    response = chunked.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "payload_too_large"
    chunked.close()
    small = http.client.HTTPConnection(host, timeout=30)
    small.request(
        "POST",
        "/import/upload/",
        body=multipart({"table_name": "people"}, b"name\nok\n"),
        headers=headers,
    )
    accepted = small.getresponse()
    assert accepted.status == 202
    accepted.read()
    small.close()


@pytest.fixture
def role_database_url(server_url):
    """Return the URL of a fresh database, as a new role that owns it and is not a superuser."""
    admin = libpq_url(server_url)
    role = f"dms_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(role)
            )
        )
    try:
        with scratch_database(server_url, "dms_lp_", owner=role) as url:
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                # PostgreSQL 14 lets everyone create in public; 15+ needs the grant (or ownership).
                conn.execute(
                    sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role))
                )
            yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_app_runs_as_a_role_that_is_not_a_superuser(role_database_url, tmp_path, make_user):
    app = create_app(
        {
            "TESTING": True,
            "DMS_DATABASE_URL": role_database_url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_VAR_DIR": str(tmp_path),
            "DMS_INPROCESS_WORKER": True,
            "DMS_SWEEP_INTERVAL_SECONDS": 3600,
        }
    )
    try:
        svc = app.extensions["dms"]
        migrate.upgrade(svc.db.engine)
        with svc.db.engine.connect() as conn:
            assert (
                conn.exec_driver_sql(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                ).scalar()
                is False
            )
        from dms.auth.users import create_user

        create_user(svc.db.engine, "lp_user", "lp@example.com", "correct horse battery")
        client = app.test_client()
        auth = auth_for(client, "lp_user")
        make_table(client, auth, fields={"name": "text", "qty": "int"})
        assert (
            client.post(
                "/crud/create_record/",
                headers=auth,
                json={"table_name": "people", "data": {"name": "a", "qty": 1}},
            ).status_code
            == 201
        )
        job = upload(client, auth, b"name,qty\nb,2\nc,x\n").get_json()
        done = wait_job(client, auth, job["job_id"])
        assert (done["rows_imported"], done["rows_rejected"]) == (1, 1)
        page = client.get("/crud/read_records/?table_name=people", headers=auth).get_json()
        assert page["count"] == 2
        with svc.db.engine.connect() as conn:
            with pytest.raises(Exception, match="superuser|pg_execute_server_program|permission"):
                conn.exec_driver_sql("COPY (SELECT 1) TO PROGRAM 'true'")
    finally:
        app.extensions["dms"].close()
