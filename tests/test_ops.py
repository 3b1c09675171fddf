"""Health, readiness (through a real PostgreSQL outage), the OpenAPI document, migrations."""

from __future__ import annotations

import time

import pytest

from dms import create_app, migrate
from tests.conftest import SECRET
from tests.pgserver import PrivatePostgres


@pytest.mark.smoke
def test_healthz_answers_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


@pytest.mark.smoke
def test_readyz_answers_ready_when_database_is_up(client):
    response = client.get("/readyz/")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_openapi_documents_every_route(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = path.replace("{int:", "{").replace("{string:", "{")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_openapi_marks_protected_endpoints(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "security" not in paths["/api/token/"]["post"]
    assert paths["/api/token/revoke/"]["post"]["security"] == [{"bearer": []}]


def test_models_and_migrations_agree(app):
    migrate.check(app.extensions["dms"].db.engine)


def test_readyz_answers_503_while_postgres_is_down_and_recovers_without_restart(tmp_path):
    server = PrivatePostgres()
    server.start()
    app = create_app(
        {
            "TESTING": True,
            "DMS_DATABASE_URL": server.url,
            "DMS_SECRET_KEY": SECRET,
            "DMS_VAR_DIR": str(tmp_path / "var"),
            "DMS_INPROCESS_WORKER": False,
        }
    )
    try:
        migrate.upgrade(app.extensions["dms"].db.engine)
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        server.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.get_json()["code"] == "unavailable"
        # a request that needs the database answers 503 too, never 500
        login = client.post("/api/token/", json={"username": "x", "password": "y"})
        assert login.status_code == 503 and login.get_json()["code"] == "unavailable"
        server.start()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "app did not recover"
            time.sleep(0.2)
        assert (
            client.post("/api/token/", json={"username": "x", "password": "y"}).status_code == 401
        )
    finally:
        app.extensions["dms"].close()
        server.destroy()
