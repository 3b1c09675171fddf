"""Token endpoints: login, refresh (rotating), revoke (logout)."""

from __future__ import annotations

from flask import Blueprint, Response

from dms.api.docs import doc
from dms.api.identity import caller
from dms.api.jsonio import json_body, json_response
from dms.auth import tokens
from dms.auth.users import authenticate
from dms.services import services

bp = Blueprint("auth", __name__, url_prefix="/api/token")

LOGIN = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
}
REFRESH = {"type": "object", "required": ["refresh"], "properties": {"refresh": {"type": "string"}}}
PAIR = {
    "type": "object",
    "required": ["access", "refresh"],
    "properties": {"access": {"type": "string"}, "refresh": {"type": "string"}},
}


@bp.post("/")
@doc(
    public=True,
    body=LOGIN,
    responses={200: ("token pair", PAIR), 401: "bad credentials", 429: "too many failures"},
)
def obtain() -> Response:
    """Log in with username and password; returns an access and a refresh token."""
    body, svc = json_body(), services()
    verified = authenticate(
        svc.db.engine,
        body.get("username"),
        body.get("password"),
        max_failures=int(svc.config["DMS_LOGIN_MAX_FAILURES"]),
        window_seconds=int(svc.config["DMS_LOGIN_WINDOW_SECONDS"]),
    )
    return json_response(
        tokens.login(svc.db.engine, verified, svc.config["DMS_REFRESH_TOKEN_DAYS"])
    )


@bp.post("/refresh/")
@doc(public=True, body=REFRESH, responses={200: ("new token pair", PAIR), 401: "token refused"})
def refresh() -> Response:
    """Exchange a refresh token for a new pair; the old refresh token dies."""
    return json_response(tokens.rotate(services().db.engine, json_body().get("refresh")))


@bp.post("/revoke/")
@doc(responses={200: ("revoked", {"type": "object"})})
def revoke() -> Response:
    """Log out: this access token and its login's whole refresh family die."""
    tokens.revoke_family(services().db.engine, caller().family)
    return json_response({"revoked": True})
