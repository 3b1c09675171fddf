"""OpenAPI 3 document generated from the registered views and their `@doc` metadata."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

F = TypeVar("F", bound=Callable[..., Any])

ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "code", "message"],
    "properties": {
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
# Statuses any protected endpoint can answer, whatever it does.
COMMON_ERRORS = {
    400: "invalid request",
    401: "missing, invalid, expired or revoked token",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    500: "internal error",
    503: "a dependency is unavailable",
}
_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def doc(
    *,
    body: Any = None,
    query: list[dict[str, Any]] | None = None,
    responses: dict[int, Any] | None = None,
    public: bool = False,
    content_type: str = "application/json",
    reads_table: bool = False,
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view; its docstring's first line is the summary.

    `reads_table`: the view reads the caller's table named by the `table_name` query
    parameter, so the token check also reads that table's registry version (one round trip).
    Not only documentation, then; it is safe on any view because Catalog.lookup uses what the
    check read only for the same owner and table name it is asked for.
    """

    def wrap(view: F) -> F:
        view._dms_doc = {  # type: ignore[attr-defined]
            "body": body,
            "query": query or [],
            "responses": responses or {200: "OK"},
            "public": public,
            "content_type": content_type,
            "reads_table": reads_table,
        }
        return view

    return wrap


def _content(schema: Any, content_type: str = "application/json") -> dict[str, Any]:
    return {content_type: {"schema": schema}}


def _responses(meta: dict[str, Any], has_body: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, value in meta["responses"].items():
        if isinstance(value, tuple):
            description, schema = value
            if isinstance(schema, dict) and "_content_type" in schema:
                content_type = schema["_content_type"]
                out[str(status)] = {
                    "description": description,
                    "content": _content({"type": "string"}, content_type),
                }
                continue
            out[str(status)] = {"description": description, "content": _content(schema)}
        else:
            out[str(status)] = {"description": value}
    errors = dict(COMMON_ERRORS)
    if meta["public"]:
        errors.pop(401)
    if has_body:
        errors[415] = "unsupported content type"
    for status, description in errors.items():
        out.setdefault(
            str(status),
            {
                "description": description,
                "content": _content({"$ref": "#/components/schemas/Error"}),
            },
        )
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for every documented route of `app`."""
    spec = APISpec(
        title="DMS",
        version="0.1.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Run-time PostgreSQL tables, records and validated CSV import."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", ERROR_SCHEMA)
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "_dms_doc", None)
        if meta is None:
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, view, meta, method)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(rule: Any, view: Any, meta: dict[str, Any], method: str) -> dict[str, Any]:
    summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{rule.endpoint}_{method.lower()}",
        "tags": [rule.endpoint.split(".")[0]],
        "responses": _responses(meta, meta["body"] is not None and method != "GET"),
    }
    params = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
        for arg in sorted(rule.arguments)
    ]
    params += meta["query"]
    if params:
        operation["parameters"] = params
    if meta["body"] is not None and method != "GET":
        operation["requestBody"] = {
            "required": True,
            "content": _content(meta["body"], meta["content_type"]),
        }
    if not meta["public"]:
        operation["security"] = [{"bearer": []}]
    return operation
