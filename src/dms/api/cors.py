"""CORS: off unless DMS_CORS_ORIGINS lists origins; preflights answered without a token."""

from __future__ import annotations

from flask import Flask, Response, current_app, request

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"


def allowed_origins(app: Flask) -> frozenset[str]:
    """Return the configured origins (a comma list or JSON list in DMS_CORS_ORIGINS)."""
    value = app.config.get("DMS_CORS_ORIGINS") or ""
    items = value if isinstance(value, list) else str(value).split(",")
    return frozenset(item.strip().rstrip("/") for item in items if item.strip())


def add_cors_headers(response: Response) -> Response:
    """Allow a listed Origin; every other origin gets no CORS headers at all."""
    origin = request.headers.get("Origin")
    if origin and origin in current_app.extensions["dms_cors"]:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    return response


def init_cors(app: Flask) -> None:
    """Read the allowed origins once and install the response hook."""
    app.extensions["dms_cors"] = allowed_origins(app)
    app.after_request(add_cors_headers)
