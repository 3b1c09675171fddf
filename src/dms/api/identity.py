"""The authenticated caller, read from the verified access token."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, Response, current_app, request
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from dms.api.errors import auth_error
from dms.auth.tokens import is_revoked
from dms.services import read_connection


@dataclass(frozen=True)
class Caller:
    """Who is calling: user id, username, admin flag, token family."""

    id: int
    username: str
    is_admin: bool
    family: str


def caller() -> Caller:
    """Return the caller of the current request (the token was verified before the view)."""
    claims = get_jwt()
    return Caller(int(claims["sub"]), claims["usr"], bool(claims["adm"]), claims["fam"])


def require_token() -> None:
    """Verify the access token for every endpoint not documented as public."""
    if request.url_rule is None or request.routing_exception is not None:
        return  # routing errors (404/405) are answered by the error handler
    if request.method == "OPTIONS":
        return  # CORS preflights carry no token; Flask answers them with the Allow list
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "_dms_doc", {}).get("public"):
        return
    verify_jwt_in_request()


def _unauthorized(message: str) -> Response:
    return auth_error(_CLEAN.get(message, message))


_CLEAN = {
    "Missing Authorization Header": "missing Authorization: Bearer <access token> header",
    "Signature verification failed": "invalid token signature",
    "Not enough segments": "malformed token",
}


def init_jwt(app: Flask) -> JWTManager:
    """Bind flask-jwt-extended, answering every token problem with a 401 in the error shape."""
    jwt = JWTManager(app)
    jwt.unauthorized_loader(_unauthorized)
    jwt.invalid_token_loader(lambda message: auth_error(f"invalid token: {message}"))
    jwt.expired_token_loader(lambda _h, _p: auth_error("token has expired"))
    jwt.revoked_token_loader(lambda _h, _p: auth_error("token has been revoked"))
    jwt.needs_fresh_token_loader(lambda _h, _p: auth_error("a fresh token is required"))
    jwt.token_verification_failed_loader(lambda _h, _p: auth_error("token rejected"))
    jwt.user_lookup_error_loader(lambda _h, _p: auth_error("unknown user"))
    jwt.token_in_blocklist_loader(
        lambda _h, payload: is_revoked(read_connection(), payload.get("fam"))
    )
    return jwt
