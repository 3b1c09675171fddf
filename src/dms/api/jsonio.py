"""JSON in and out: orjson responses, strict request bodies, marshmallow error flattening."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Response, request
from flask.json.provider import JSONProvider
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import UnsupportedMediaType

from dms.engine.errors import InvalidRequest, ValidationFailed
from dms.engine.jsonvalues import plain_decimal


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # A numeric keeps every digit: a JSON number in positional notation, never a float.
        return orjson.Fragment(plain_decimal(value)) if value.is_finite() else str(value)
    if isinstance(value, (uuid.UUID, dt.timedelta)):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Return `value` as JSON bytes (dates ISO 8601, numerics exact)."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


class OrjsonProvider(JSONProvider):
    """Flask JSON provider backed by orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Return `obj` as a JSON string."""
        return dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text."""
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """Return a JSON response for the given value."""
        value = args[0] if len(args) == 1 else (args or kwargs)
        return Response(dumps(value), mimetype="application/json")


def json_response(value: Any, status: int = 200) -> Response:
    """Return `value` serialized as a JSON response."""
    return Response(dumps(value), status=status, mimetype="application/json")


def json_body() -> dict[str, Any]:
    """Return the request's JSON object body; 415 for another content type, 400 if malformed."""
    if not request.is_json:
        raise UnsupportedMediaType()
    raw = request.get_data(cache=True)
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Return marshmallow's nested messages as field -> list of messages."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for sub, msgs in flatten_errors(value, name).items():
                flat.setdefault(sub, []).extend(msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_schema"] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            for sub, msgs in flatten_errors(item, prefix).items():
                flat.setdefault(sub, []).extend(msgs)
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `data` with `schema`; raise ValidationFailed with per-field errors."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed("invalid request", errors=flatten_errors(exc.messages)) from exc
