"""Request parameters common to the table endpoints: body/query access and owner resolution."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import request

from dms.api.identity import caller
from dms.api.jsonio import json_body
from dms.auth.users import get_user
from dms.engine.errors import NotFound, TableNotFound, ValidationFailed
from dms.services import read_connection


def request_data() -> dict[str, Any]:
    """Return the JSON body (POST/PUT/PATCH; DELETE when it has one) or the query string."""
    if request.method in ("POST", "PUT", "PATCH") or (
        request.method == "DELETE" and (request.content_length or request.is_json)
    ):
        return json_body()
    return request.args.to_dict()


def expect(
    data: Mapping[str, Any], required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, Any]:
    """Return `data` if it has every required key and no unknown one; else 400 per field."""
    required, allowed = list(required), {*required, *optional, "owner"}
    errors: dict[str, list[str]] = {}
    for key in required:
        if data.get(key) is None:
            errors[key] = ["missing required field"]
    for key in data:
        if key not in allowed:
            errors[str(key)[:80]] = ["unknown field"]
    if errors:
        raise ValidationFailed("invalid request", errors=errors)
    return dict(data)


def owner_id(data: Mapping[str, Any]) -> int:
    """Return whose tables the request acts on: the caller's, or (admins only) `owner`'s."""
    me = caller()
    owner = data.get("owner")
    if owner is None or owner == me.username:
        return me.id
    if not isinstance(owner, str):
        raise ValidationFailed("owner must be a username", errors={"owner": ["must be a string"]})
    if not me.is_admin:
        # Another user's tables do not exist for a non-admin: same answer as a missing table.
        raise TableNotFound("table does not exist")
    user = get_user(read_connection(), owner)
    if user is None:
        raise NotFound(f"no user {owner[:80]!r}", code="user_not_found")
    return user.id
