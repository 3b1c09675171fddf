"""Operations endpoints: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from dms.api.docs import build_spec, doc
from dms.api.errors import error_response
from dms.api.jsonio import json_response
from dms.services import services

bp = Blueprint("ops", __name__)
STATUS_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}}


@bp.get("/healthz")
@doc(public=True, responses={200: ("process is up", STATUS_SCHEMA)})
def healthz() -> Response:
    """Report that the process is up."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
@doc(public=True, responses={200: ("database and broker reachable", STATUS_SCHEMA)})
def readyz() -> Response:
    """Report whether the database and the broker are reachable."""
    problems = services().readiness_problems()
    if problems:
        return error_response(503, "unavailable", "; ".join(problems))
    return json_response({"status": "ready"})


@bp.get("/openapi.json")
@doc(public=True, responses={200: ("OpenAPI 3.1 document", {"type": "object"})})
def openapi() -> Response:
    """Return the OpenAPI document of every endpoint."""
    return json_response(build_spec(current_app))
