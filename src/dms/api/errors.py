"""The one error handler: every error becomes `{status, code, message, errors?}` JSON."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from flask import Flask, Response, g, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from dms.engine.errors import Conflict, DmsError, NotFound

log = logging.getLogger("dms.api")

# Every code the API can answer, with its status; the README documents this table.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "validation_error": 400,
    "invalid_name": 400,
    "invalid_type": 400,
    "limit_exceeded": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "table_not_found": 404,
    "column_not_found": 404,
    "record_not_found": 404,
    "job_not_found": 404,
    "user_not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "table_exists": 409,
    "column_exists": 409,
    "user_exists": 409,
    "unique_violation": 409,
    "table_busy": 409,
    "idempotency_conflict": 409,
    "job_ended": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "unavailable": 503,
}

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}

_HTTP_MESSAGES = {
    404: "no such endpoint",
    405: "method not allowed for this endpoint",
    413: "request body too large",
    415: "unsupported content type: send application/json",
}


def error_response(
    status: int,
    code: str,
    message: str,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Return the SPEC error body as a response."""
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if errors:
        body["errors"] = errors
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def auth_error(message: str) -> Response:
    """Return a 401 with the challenge header."""
    return error_response(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="dms"'}
    )


def _status_for(error: DmsError) -> int:
    if error.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[error.code]
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    return 400


def handle_dms_error(error: DmsError) -> Response:
    """Map a domain error to its status and the error shape."""
    status = _status_for(error)
    if status == 401:
        return auth_error(error.message)
    headers = {}
    if status == 429 and "retry_after" in error.detail:
        headers["Retry-After"] = str(error.detail["retry_after"])
    return error_response(status, error.code, error.message, error.errors, headers)


def handle_http_error(error: HTTPException) -> Response:
    """Answer werkzeug's HTTP errors (404, 405, 413, 415, …) in the error shape."""
    status = error.code or 500
    code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    message = _HTTP_MESSAGES.get(status) or (error.description or error.name)
    response = error_response(status, code, message)
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def handle_database_down(error: Exception) -> Response:
    """Answer 503 while PostgreSQL is unreachable or a statement timed out."""
    log.warning("database unavailable [%s]: %s", g.get("request_id"), error.__class__.__name__)
    if isinstance(getattr(error, "orig", None), psycopg.errors.QueryCanceled):
        return error_response(
            503, "unavailable", "the query took too long and was cancelled; narrow the filter"
        )
    return error_response(503, "unavailable", "the database is unavailable; retry shortly")


def handle_unexpected(error: Exception) -> Response:
    """Log an unexpected exception with the request id and answer a generic 500."""
    # (DmsError and HTTPException have handlers of their own and never come here.)
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    if sqlstate.startswith("54"):
        # Class 54, program limit exceeded: the request's data is too big for PostgreSQL (a
        # value too long for a unique or indexed column, too many columns…). psycopg files it
        # under OperationalError, but retrying would not help: it is the caller's input.
        return error_response(
            400,
            "invalid_request",
            "a value exceeds a PostgreSQL limit (for example, too long to be indexed)",
        )
    if isinstance(error, (OperationalError, PoolTimeout, psycopg.OperationalError)) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return handle_database_down(error)
    log.exception("unexpected error [%s] %s %s", g.get("request_id"), request.method, request.path)
    return error_response(
        500, "internal_error", f"internal error (request id {g.get('request_id', '-')})"
    )


def register_error_handlers(app: Flask) -> None:
    """Install the one error handler for every error class."""
    app.register_error_handler(DmsError, handle_dms_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
