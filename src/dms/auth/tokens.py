"""Token families: every login starts a family; refresh rotates within it; reuse kills it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from dms.auth.users import InvalidCredentials, User, VerifiedLogin, record_login, upgrade_hash
from dms.engine.errors import DmsError, ValidationFailed
from dms.tables import refresh_tokens, token_families, user_tables, users


class TokenRejected(DmsError):
    """Raised when a token is revoked, reused or otherwise refused."""

    code = "unauthorized"


def _pair(user: User, family: str, jti: str) -> dict[str, str]:
    """Return a new access/refresh pair whose refresh token has the id `jti` (made by us)."""
    # The username and admin flag ride in the token so a request needs no user lookup.
    claims: dict[str, Any] = {"fam": family, "usr": user.username, "adm": user.is_admin}
    access = create_access_token(identity=str(user.id), additional_claims=claims)
    # Our own jti (additional claims take precedence over the library's): it is stored before
    # the token exists, and the token need not be decoded again to learn it.
    refresh = create_refresh_token(identity=str(user.id), additional_claims={**claims, "jti": jti})
    return {"access": access, "refresh": refresh}


# A family and its first refresh token in one statement (the foreign key is checked at its end).
_new_family = (
    insert(token_families)
    .values(
        id=bindparam("family", type_=Text),
        user_id=bindparam("user_id"),
        expires_at=bindparam("expires_at"),
    )
    .returning(token_families.c.id)
    .cte("new_family")
)
_START = insert(refresh_tokens).from_select(
    ["jti", "family_id"], select(bindparam("jti", type_=Text), _new_family.c.id)
)


def login(engine: Engine, verified: VerifiedLogin, refresh_days: int) -> dict[str, str]:
    """Start a token family for a verified login and return its first access/refresh pair."""
    family, jti = uuid.uuid4().hex, str(uuid.uuid4())
    with engine.begin() as conn:  # the login's one transaction: bookkeeping and tokens
        # First, and under a share lock: the password just checked must still be the user's.
        # A new password (or the user's deletion) committed since then refuses this login;
        # one being made waits for it, then revokes its family. It also locks in the order
        # those take (the user, then families), so none of them can deadlock with a login.
        still = conn.execute(
            select(users.c.id)
            .where(users.c.id == verified.user.id, users.c.password_hash == verified.old_hash)
            .with_for_update(read=True)
        ).first()
        if still is None:
            raise InvalidCredentials("invalid username or password")
        record_login(conn, verified)
        conn.execute(
            _START,
            {
                "family": family,
                "user_id": verified.user.id,
                "expires_at": datetime.now(UTC) + timedelta(days=refresh_days),
                "jti": jti,
            },
        )
    upgrade_hash(engine, verified)
    return _pair(verified.user, family, jti)


def forget_expired_logins(engine: Engine) -> int:
    """Delete expired token families (their refresh tokens go with them); return how many."""
    # Dead for good once expired, and otherwise there for ever: a family a login, a token a
    # refresh. The periodic sweep runs this.
    with engine.begin() as conn:
        stale = delete(token_families).where(token_families.c.expires_at < func.now())
        return conn.execute(stale).rowcount


# Spend the old token, store its successor and read the user, in one statement. `used_at IS
# NULL` makes it race-free: of two uses of one token, the second waits for the first's row
# lock, then finds the token spent and changes nothing. A revoked or expired family spends
# nothing either. The family row is locked (FOR NO KEY UPDATE) before the token, in the order
# a user's deletion cascades (family, then tokens), so the two cannot deadlock; a revoke in
# progress is waited for, and then seen.
_live_family = (
    select(token_families.c.id)
    .where(
        token_families.c.id == bindparam("family", type_=Text),
        token_families.c.revoked_at.is_(None),
        token_families.c.expires_at > func.now(),
    )
    .with_for_update(key_share=True)
    .exists()
)
_spent = (
    update(refresh_tokens)
    .where(
        refresh_tokens.c.jti == bindparam("old_jti", type_=Text),
        refresh_tokens.c.family_id == bindparam("family", type_=Text),
        refresh_tokens.c.used_at.is_(None),
        _live_family,
    )
    .values(used_at=func.now())
    .returning(refresh_tokens.c.family_id)
    .cte("spent")
)
_stored = (
    insert(refresh_tokens)
    .from_select(["jti", "family_id"], select(bindparam("new_jti", type_=Text), _spent.c.family_id))
    .returning(refresh_tokens.c.family_id)
    .cte("stored")
)
# The user as it is now (a renamed or demoted user's new tokens say so), not as the old token
# said; no row: nothing was spent.
_ROTATE = select(users.c.id, users.c.username, users.c.is_admin).select_from(
    _stored.join(token_families, token_families.c.id == _stored.c.family_id).join(
        users, users.c.id == token_families.c.user_id
    )
)


def rotate(engine: Engine, refresh_token: object) -> dict[str, str]:
    """Exchange a live refresh token for a new pair; reusing a spent one revokes its family."""
    if not isinstance(refresh_token, str) or not refresh_token:
        raise ValidationFailed("refresh is required", errors={"refresh": ["required string"]})
    claims = decode_token(refresh_token)  # signature, expiry and algorithm are checked here
    if claims.get("type") != "refresh":
        raise TokenRejected("a refresh token is required")
    family, old_jti = claims.get("fam"), claims.get("jti")
    if not isinstance(family, str) or not isinstance(old_jti, str):
        raise TokenRejected("token has been revoked")
    jti = str(uuid.uuid4())
    with engine.begin() as conn:
        params = {"old_jti": old_jti, "new_jti": jti, "family": family}
        row = conn.execute(_ROTATE, params).first()
        # A spent (or unknown) token came back to a live family: assume it was stolen and kill
        # the whole login, in this same transaction.
        reused = row is None and revoke_family(conn, family)
    if reused:
        raise TokenRejected("refresh token reuse detected; the session has been revoked")
    if row is None:
        raise TokenRejected("token has been revoked")
    return _pair(User(row.id, row.username, "", row.is_admin), family, jti)


def revoke_family(conn: Connection | Engine, family: str) -> bool:
    """Revoke every token of a login; return True if it was live until now."""
    if isinstance(conn, Engine):
        with conn.begin() as own:
            return revoke_family(own, family)
    revoked = conn.execute(
        update(token_families)
        .where(
            token_families.c.id == family,
            token_families.c.revoked_at.is_(None),
            token_families.c.expires_at > func.now(),
        )
        .values(revoked_at=datetime.now(UTC))
        .returning(token_families.c.id)
    ).first()
    return revoked is not None


# Built once: every authenticated request runs it, and building a select costs more than running it.
_FAMILY = select(token_families.c.revoked_at, token_families.c.expires_at).where(
    token_families.c.id == bindparam("family")
)


def is_revoked(conn: Connection, family: object) -> bool:
    """Return True unless `family` is a live login (exists, not revoked, not expired)."""
    if not isinstance(family, str):
        return True
    return _dead(conn.execute(_FAMILY, {"family": family}).first())


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
