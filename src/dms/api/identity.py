"""The authenticated caller, read from the verified access token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, decode_token
from flask_jwt_extended.exceptions import (
    InvalidHeaderError,
    NoAuthorizationError,
    RevokedTokenError,
    WrongTokenError,
)
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dms.api.errors import auth_error
from dms.auth.tokens import is_revoked, is_revoked_reading_table
from dms.engine.catalog import KnownTable
from dms.engine.errors import InvalidName
from dms.engine.identifiers import validate_identifier
from dms.services import close_read_connection, read_connection

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who is calling: user id, username, admin flag, token family."""

    id: int
    username: str
    is_admin: bool
    family: str


def caller() -> Caller:
    """Return the caller of the current request (the token was verified before the view)."""
    claims = g.dms_claims
    return Caller(int(claims["sub"]), claims["usr"], bool(claims["adm"]), claims["fam"])


class VerifiedTokens:
    """Claims of access tokens this process has verified, by token string.

    A token's signature and claims are fixed by its bytes, so verifying it once per process is
    enough; expiry is checked again on every use, and revocation is never cached (it is asked
    of the database on every request). Bounded: the whole map is dropped when full.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._claims: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def claims(self, token: str) -> dict[str, Any]:
        """Return the verified claims of `token`; raise flask-jwt-extended's errors if bad."""
        known = self._claims.get(token)
        if known is not None and known["exp"] > time.time():
            return known
        claims = decode_token(token)  # signature, algorithm, expiry, required claims
        if not isinstance(claims.get("exp"), int | float):
            return claims  # a token that never expires is verified on every use
        with self._lock:
            if len(self._claims) >= self.max_entries:
                self._claims.clear()
            self._claims[token] = claims
        return claims


def bearer_token() -> str:
    """Return the token of the `Authorization: Bearer <token>` header, or raise a 401 error."""
    header = request.headers.get("Authorization", "").strip().strip(",")
    if not header:
        raise NoAuthorizationError("missing Authorization: Bearer <access token> header")
    # Several credentials may share the header ("Bearer x, Basic y"): exactly one Bearer.
    bearers = [c.split() for c in header.split(",") if c.strip().lower().startswith("bearer")]
    if len(bearers) != 1 or len(bearers[0]) != 2 or bearers[0][0].lower() != "bearer":
        raise InvalidHeaderError("expected 'Authorization: Bearer <access token>'")
    return bearers[0][1]


def require_token() -> None:
    """Verify the access token for every endpoint not documented as public."""
    if request.url_rule is None or request.routing_exception is not None:
        return  # routing errors (404/405) are answered by the error handler
    if request.method == "OPTIONS":
        return  # CORS preflights carry no token; Flask answers them with the Allow list
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "_dms_doc", {}).get("public"):
        return
    claims = current_app.extensions["dms_tokens"].claims(bearer_token())
    if claims.get("type") != "access":
        raise WrongTokenError("Only non-refresh tokens are allowed")
    family = claims.get("fam")
    table_name = _table_read_by_request(view)
    if table_name is None:
        revoked = _first_statement(lambda conn: is_revoked(conn, family))
    else:
        # A page read asks two things of the registry: fold them into one round trip.
        owner_id = int(claims["sub"])
        revoked, id_version = _first_statement(
            lambda conn: is_revoked_reading_table(conn, family, owner_id, table_name)
        )
        g.dms_known_table = KnownTable(owner_id, table_name, id_version)
    if revoked:
        raise RevokedTokenError({}, claims)
    g.dms_claims = claims


def _first_statement(run: Callable[[Connection], T]) -> T:
    """Run the request's first statement, on a new connection if the pooled one was dead.

    Pooled connections used a moment ago are not pinged (see dms.db); if the server dropped
    this one meanwhile, nothing has happened yet in this request, so trying again is safe.
    """
    try:
        return run(read_connection())
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    close_read_connection()
    return run(read_connection())


def known_table() -> KnownTable | None:
    """Return the table (id, version) that the token check read for this request, if any."""
    return g.get("dms_known_table")


def _table_read_by_request(view: Any) -> str | None:
    """Return the caller's own table that a `reads_table` view reads (None: another's, none)."""
    if not getattr(view, "_dms_doc", {}).get("reads_table") or "owner" in request.args:
        return None
    try:
        return validate_identifier(request.args.get("table_name"), "table")
    except InvalidName:
        return None  # the view answers 400 for it


# PyJWT's wording for the commonest bad tokens, said plainly.
_INVALID = {"Signature verification failed": "bad signature", "Not enough segments": "malformed"}


def init_jwt(app: Flask) -> JWTManager:
    """Bind flask-jwt-extended, answering every token problem with a 401 in the error shape.

    Tokens are verified by `require_token` (through `decode_token`), so only the errors it and
    `decode_token` raise can reach these loaders.
    """
    jwt = JWTManager(app)
    app.extensions["dms_tokens"] = VerifiedTokens()
    jwt.unauthorized_loader(auth_error)  # only bearer_token's own, already worded
    jwt.invalid_token_loader(
        lambda message: auth_error(f"invalid token: {_INVALID.get(message, message)}")
    )
    jwt.expired_token_loader(lambda _h, _p: auth_error("token has expired"))
    jwt.revoked_token_loader(lambda _h, _p: auth_error("token has been revoked"))
    return jwt
