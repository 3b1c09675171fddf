"""Token families: every login starts a family; refresh rotates within it; reuse kills it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import Connection, Engine, and_, bindparam, insert, select, update

from dms.auth.users import User
from dms.engine.errors import DmsError, ValidationFailed
from dms.tables import refresh_tokens, token_families, user_tables


class TokenRejected(DmsError):
    """Raised when a token is revoked, reused or otherwise refused."""

    code = "unauthorized"


def _claims(user: User, family: str) -> dict[str, Any]:
    # The username and admin flag ride in the token so a request needs no user lookup.
    return {"fam": family, "usr": user.username, "adm": user.is_admin}


def _pair(engine: Engine, user: User, family: str) -> dict[str, str]:
    claims = _claims(user, family)
    access = create_access_token(identity=str(user.id), additional_claims=claims)
    refresh = create_refresh_token(identity=str(user.id), additional_claims=claims)
    jti = decode_token(refresh)["jti"]
    with engine.begin() as conn:
        conn.execute(insert(refresh_tokens).values(jti=jti, family_id=family))
    return {"access": access, "refresh": refresh}


def login(engine: Engine, user: User, refresh_days: int) -> dict[str, str]:
    """Start a token family for `user` and return its first access/refresh pair."""
    family = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            insert(token_families).values(
                id=family,
                user_id=user.id,
                expires_at=datetime.now(UTC) + timedelta(days=refresh_days),
            )
        )
    return _pair(engine, user, family)


def rotate(engine: Engine, refresh_token: object) -> dict[str, str]:
    """Exchange a live refresh token for a new pair; reusing a spent one revokes its family."""
    if not isinstance(refresh_token, str) or not refresh_token:
        raise ValidationFailed("refresh is required", errors={"refresh": ["required string"]})
    claims = decode_token(refresh_token)  # signature, expiry and algorithm are checked here
    if claims.get("type") != "refresh":
        raise TokenRejected("a refresh token is required")
    family = claims.get("fam")
    if not isinstance(family, str) or is_revoked(engine, family):
        raise TokenRejected("token has been revoked")
    with engine.begin() as conn:
        spent = conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.jti == claims["jti"], refresh_tokens.c.used_at.is_(None))
            .values(used_at=datetime.now(UTC))
            .returning(refresh_tokens.c.jti)
        ).first()
    if spent is None:
        # A spent (or unknown) token came back: assume it was stolen and kill the whole login.
        revoke_family(engine, family)
        raise TokenRejected("refresh token reuse detected; the session has been revoked")
    user = User(int(claims["sub"]), claims["usr"], "", bool(claims["adm"]))
    return _pair(engine, user, family)


def revoke_family(engine: Engine, family: str) -> None:
    """Revoke every token of a login."""
    with engine.begin() as conn:
        conn.execute(
            update(token_families)
            .where(token_families.c.id == family, token_families.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )


# Built once: every authenticated request runs it, and building a select costs more than running it.
_FAMILY = select(token_families.c.revoked_at, token_families.c.expires_at).where(
    token_families.c.id == bindparam("family")
)


def is_revoked(conn: Connection | Engine, family: object) -> bool:
    """Return True unless `family` is a live login (exists, not revoked, not expired)."""
    if not isinstance(family, str):
        return True
    if isinstance(conn, Engine):
        with conn.connect() as own:
            row = own.execute(_FAMILY, {"family": family}).first()
    else:
        row = conn.execute(_FAMILY, {"family": family}).first()
    return _dead(row)


def _dead(row: Any) -> bool:
    return row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC)


# The family check and a table's (id, version) in one round trip, for requests naming a table.
_FAMILY_AND_TABLE = (
    select(
        token_families.c.revoked_at,
        token_families.c.expires_at,
        user_tables.c.id,
        user_tables.c.version,
    )
    .select_from(
        token_families.outerjoin(
            user_tables,
            and_(
                user_tables.c.owner_id == bindparam("owner_id"),
                user_tables.c.name == bindparam("name"),
            ),
        )
    )
    .where(token_families.c.id == bindparam("family"))
)


def is_revoked_reading_table(
    conn: Connection, family: object, owner_id: int, table_name: str
) -> tuple[bool, tuple[int, int] | None]:
    """Return `is_revoked(family)` and `owner_id`'s table `table_name` as (id, version) or None."""
    if not isinstance(family, str):
        return True, None
    row = conn.execute(
        _FAMILY_AND_TABLE, {"family": family, "owner_id": owner_id, "name": table_name}
    ).first()
    if row is None or _dead(row):
        return True, None
    return False, None if row.id is None else (row.id, row.version)
