"""Every operation of /openapi.json fuzzed: no 5xx, answers as documented, one error shape."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import HealthCheck
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dms import create_app
from dms.api.errors import STATUS_BY_CODE
from tests.conftest import base_config
from tests.fuzz.conftest import TALLY, FuzzTarget
from tests.fuzz.strategies import (
    BODY_VALUES,
    FIELDS,
    QUERY_VALUES,
    SEED_ROWS,
    steer,
    steer_path,
)

# Cases per operation in the fuzzing phase (after the coverage phase): small for `make test`,
# large for `make fuzz`. The run is derandomized; DMS_FUZZ_SEED explores other inputs.
EXAMPLES = int(os.environ.get("DMS_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("DMS_FUZZ_SEED", "20240601"))
ERROR_KEYS = {"status", "code", "message", "errors"}
STEERED = ("/schemas/", "/crud/", "/import/upload/")


def load_document() -> Any:
    """Return the app's own /openapi.json loaded by schemathesis, with the run's settings."""
    # Loaded at collection time, as `schema.parametrize()` needs: from an app whose database is
    # never touched (the document is built from the url map alone). Requests go to the fixture's
    # app on the real database. (`schemathesis.pytest.from_fixture` fails on pytest >= 9.2.)
    with tempfile.TemporaryDirectory() as var:
        doc_app = create_app(base_config("postgresql+psycopg://unused@127.0.0.1:9/unused", var))
        loaded = schemathesis.openapi.from_wsgi("/openapi.json", doc_app)
        doc_app.extensions["dms"].close()
    loaded.app = None
    loaded.config.generation.update(
        max_examples=EXAMPLES,
        deterministic=True,
        database="none",
        # The token is ours on every request: auth is fuzzed by tests/test_auth.py instead.
        with_security_parameters=False,
    )
    loaded.config.update(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    loaded.config.seed = SEED
    # Schemathesis leaves out the operation that served the document unless a filter selects
    # it: select everything, so GET /openapi.json is fuzzed too.
    return loaded.include(path_regex="^/")


schema = load_document()


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Point part of the generated bodies at the real table, its columns and its rows."""
    if context.operation.path.startswith(STEERED):
        return steer(body, BODY_VALUES)
    return st.just(body)


@schema.hook
def flatmap_query(context: Any, query: Any) -> Any:
    """Point part of the generated query strings at the real table and its columns."""
    if context.operation.path.startswith(STEERED):
        return steer(query, QUERY_VALUES)
    return st.just(query)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
    """Point part of the generated job ids at a real job."""
    return steer_path(path_parameters)


def spec_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is JSON `{status, code, message, errors?}` with a known code and its status."""
    status = response.status_code
    if status < 400:
        return None
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
    if isinstance(content_type, list):
        content_type = content_type[0]
    mimetype = (content_type or "").split(";")[0].strip()
    assert mimetype == "application/json", f"{status} answered as {content_type!r}, not JSON"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise AssertionError(f"{status} body is not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), f"{status} body is not an object: {body!r}"
    assert set(body) <= ERROR_KEYS, f"unexpected keys {sorted(set(body) - ERROR_KEYS)}"
    assert body.get("status") == status, f"body status {body.get('status')!r} != {status}"
    code, message = body.get("code"), body.get("message")
    assert isinstance(code, str) and code in STATUS_BY_CODE, f"unknown code {code!r}"
    assert STATUS_BY_CODE[code] == status, f"code {code!r} is a {STATUS_BY_CODE[code]}"
    assert isinstance(message, str) and message, "message must be a non-empty string"
    assert "Traceback" not in message, message
    if "errors" in body:
        errors = body["errors"]
        assert isinstance(errors, dict) and errors, f"errors must be a non-empty object: {errors}"
        for key, messages in errors.items():
            assert isinstance(messages, list) and messages, f"errors[{key!r}] is not a list"
            assert all(isinstance(m, str) for m in messages), f"errors[{key!r}]: {messages}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    spec_error_shape,
]


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Any, fuzz_target: FuzzTarget) -> None:
    """One item per operation: schemathesis' coverage phase, then DMS_FUZZ_EXAMPLES cases."""
    token = fuzz_target.token
    if case.path.startswith("/api/token/revoke"):
        token = fuzz_target.fresh_token()  # revoking the shared login would end the run
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = case.call(headers=headers, app=fuzz_target.app)
        TALLY[case.operation.label][response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)
    finally:
        if case.path.startswith("/schemas/") and case.method != "GET":
            fuzz_target.restore()


def test_every_route_is_in_the_document(fuzz_target: FuzzTarget) -> None:
    """No route escapes the fuzzer: the url map and /openapi.json list the same operations."""
    paths = fuzz_target.client.get("/openapi.json").get_json()["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    routed = {
        (method, re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule))
        for rule in fuzz_target.app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert routed - documented == set()
    assert documented - routed == set()
    fuzzed = {tuple(op.ok().label.split(" ", 1)) for op in schema.get_all_operations()}
    assert fuzzed == documented


REGRESS = "regress"
# Requests the fuzzer (or the soak) once answered wrongly, replayed on every run with the same
# checks. Each runs on its own fresh copy of the `fuzzed` table, named `regress`.
FOUND: dict[str, tuple[str, str, dict[str, Any]]] = {
    "a jsonb integer beyond 64 bits (was a 500 after the row was stored)": (
        "POST",
        "/crud/create_record/",
        {"body": {"table_name": REGRESS, "data": {"meta": {"n": 2**64}}}},
    ),
    "reading a row holding a jsonb integer beyond 64 bits (was a 500)": (
        "GET",
        "/crud/read_records/",
        {"query": {"table_name": REGRESS}, "setup": {"meta": {"n": -(2**70)}}},
    ),
    "a jsonb float of 1.8e308, which jsonb gives back as a 309-digit integer (was a 500)": (
        "PUT",
        "/crud/update_record/",
        {"body": {"table_name": REGRESS, "id": 1, "data": {"meta": [-1.7976931348623157e308]}}},
    ),
    "alter_column refused for 10+ rows (leaves a server-side cursor open)": (
        "POST",
        "/schemas/alter_column/",
        {"body": {"table_name": REGRESS, "column_name": "name", "column_type": "bigint"}},
    ),
    "a failed login (401, not in the document)": (
        "POST",
        "/api/token/",
        {"body": {"username": "nobody", "password": "wrong"}},
    ),
    "a bad refresh token (401, not in the document)": (
        "POST",
        "/api/token/refresh/",
        {"body": {"refresh": "not-a-token"}},
    ),
}


@pytest.mark.parametrize("name", list(FOUND))
def test_found_inputs_answer_as_documented(fuzz_target: FuzzTarget, name: str) -> None:
    method, path, parts = FOUND[name]
    client, headers = fuzz_target.client, fuzz_target.headers
    created = client.post(
        "/schemas/create_table/", json={"table_name": REGRESS, "fields": FIELDS}, headers=headers
    )
    assert created.status_code == 201, created.get_json()
    try:
        rows = [*SEED_ROWS, *([parts["setup"]] if "setup" in parts else [])]
        body = json.dumps({"table_name": REGRESS, "records": rows})
        seeded = client.post(
            "/crud/create_records/", data=body, content_type="application/json", headers=headers
        )
        assert seeded.status_code == 201, seeded.get_json()
        case = schema[path][method].Case(body=parts.get("body", NOT_SET), query=parts.get("query"))
        response = case.call(headers=headers, app=fuzz_target.app)
        case.validate_response(response, checks=CHECKS, headers=headers)
    finally:
        client.delete("/schemas/delete_table/", json={"table_name": REGRESS}, headers=headers)
