"""The one error shape, for every kind of failure."""

from __future__ import annotations

import pytest

from tests.conftest import bearer, login


def assert_shape(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == status and body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"status", "code", "message", "errors"}
    assert "Traceback" not in response.get_data(as_text=True)
    return body


@pytest.mark.parametrize("path", ["/nope", "/api/", "/schemas/nothing/", "/%00", "/api/token/x/y"])
def test_unknown_routes_answer_404(client, path):
    assert_shape(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method,path", [("GET", "/api/token/"), ("DELETE", "/healthz"), ("PUT", "/api/token/refresh/")]
)
def test_wrong_methods_answer_405_with_allow(client, method, path):
    response = client.open(path, method=method)
    assert_shape(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]


def test_oversized_json_body_answers_413(client):
    big = b'{"username": "' + b"x" * (2 << 20) + b'"}'
    response = client.post("/api/token/", data=big, content_type="application/json")
    assert_shape(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_non_json_body_answers_415(client, content_type):
    kwargs = {"data": "username=a"}
    if content_type:
        kwargs["content_type"] = content_type
    assert_shape(client.post("/api/token/", **kwargs), 415, "unsupported_media_type")


@pytest.mark.parametrize("data", ["{", "nul", '{"a": }', "[1, 2]", '"str"', "", "\xff"])
def test_malformed_json_answers_400(client, data):
    response = client.post("/api/token/", data=data, content_type="application/json")
    assert_shape(response, 400, "invalid_request")


def test_unexpected_exception_answers_generic_500_without_internals(make_app, caplog):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    boom._dms_doc = {"public": True}
    response = app.test_client().get("/boom")
    body = assert_shape(response, 500, "internal_error")
    assert "hunter2" not in response.get_data(as_text=True)
    request_id = response.headers["X-Request-Id"]
    assert request_id in body["message"]
    assert any(request_id in r.getMessage() for r in caplog.records)


def test_trailing_slash_is_optional_and_never_redirects(client, make_user):
    user = make_user()
    for path in ("/api/token", "/api/token/"):
        response = client.post(path, json={"username": user.username, "password": "x"})
        assert response.status_code == 401
    pair = login(client, user.username)
    assert client.post("/api/token/revoke", headers=bearer(pair["access"])).status_code == 200


def test_security_headers_on_every_response(client):
    response = client.get("/healthz")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "given,kept",
    [
        ("abc-123.X_y", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("a b", False),
        ("id;drop", False),
        ("<script>", False),
        ("", False),
    ],
)
def test_a_callers_request_id_is_echoed_only_when_plain(client, given, kept):
    response = client.get("/healthz", headers={"X-Request-Id": given} if given else {})
    echoed = response.headers["X-Request-Id"]
    assert (echoed == given) is kept
    assert len(echoed) <= 64 and echoed.replace("-", "").replace(".", "").replace("_", "").isalnum()
