"""Users: argon2id password hashes, creation, lookup and login throttling."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dms.engine.errors import Conflict, InvalidRequest, NotFound, RateLimited, ValidationFailed
from dms.tables import login_failures, token_families, users

# argon2id with OWASP's first recommended setting (19 MiB, 2 passes, 1 lane). Every login in
# flight holds `memory_cost` for the hash, so the library's 64 MiB default alone was a third of a
# web worker's memory; hashes made with other settings still verify and are upgraded at login.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    # Verifying against this keeps a login for an unknown user as slow as for a known one.
    return _hasher.hash("dms-timing-equaliser")


USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # whole names only: fullmatch
EMAIL_RE = re.compile(r"[^@\s\x00]+@[^@\s\x00]+")  # fullmatch: no newline, no NUL
MIN_PASSWORD_CHARS = 8


class UserExists(Conflict):
    """Raised when a username is already taken."""

    code = "user_exists"


@dataclass(frozen=True)
class User:
    """A service user."""

    id: int
    username: str
    email: str
    is_admin: bool


def _row_to_user(row: object) -> User:
    return User(row.id, row.username, row.email, row.is_admin)  # type: ignore[attr-defined]


def hash_password(password: str) -> str:
    """Return the argon2id hash of `password`."""
    return _hasher.hash(password)


def check_new_password(password: object) -> str:
    """Return `password` if it is acceptable as a new password, else raise."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise ValidationFailed(
            "password too short",
            errors={"password": [f"must be at least {MIN_PASSWORD_CHARS} characters"]},
        )
    return password


def create_user(
    engine: Engine, username: str, email: str, password: str, *, is_admin: bool = False
) -> User:
    """Create a user and return it; raises UserExists or ValidationFailed."""
    errors: dict[str, list[str]] = {}
    if not USERNAME_RE.fullmatch(username):
        errors["username"] = ["1-64 characters: letters, digits, _ . @ -"]
    if not EMAIL_RE.fullmatch(email):
        errors["email"] = ["not a valid email address"]
    if errors:
        raise ValidationFailed("invalid user", errors=errors)
    password_hash = hash_password(check_new_password(password))
    try:
        with engine.begin() as conn:
            row = conn.execute(
                insert(users)
                .values(
                    username=username, email=email, password_hash=password_hash, is_admin=is_admin
                )
                .returning(users.c.id, users.c.username, users.c.email, users.c.is_admin)
            ).one()
    except IntegrityError as exc:
        raise UserExists(f"user {username!r} already exists") from exc
    return _row_to_user(row)


def get_user(conn: Connection | Engine, username: str) -> User | None:
    """Return the user called `username`, or None."""
    query = select(users.c.id, users.c.username, users.c.email, users.c.is_admin).where(
        users.c.username == username
    )
    if isinstance(conn, Engine):
        with conn.connect() as c:
            row = c.execute(query).first()
    else:
        row = conn.execute(query).first()
    return _row_to_user(row) if row else None


def require_user(engine: Engine, username: str) -> User:
    """Return the user called `username`, or raise NotFound."""
    user = get_user(engine, username)
    if user is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    return user


def list_users(engine: Engine) -> list[User]:
    """Return every user, by username."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(users.c.id, users.c.username, users.c.email, users.c.is_admin).order_by(
                users.c.username
            )
        ).all()
    return [_row_to_user(r) for r in rows]


def set_password(engine: Engine, username: str, password: str) -> None:
    """Replace a user's password; a new one also ends every login the user has."""
    check_new_password(password)
    with engine.begin() as conn:
        row = conn.execute(
            select(users.c.id, users.c.password_hash)
            .where(users.c.username == username)
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"no user {username!r}", code="user_not_found")
        if _verify(row.password_hash, password):
            return  # the same password (ensure-admin at every start): no session to end
        conn.execute(
            update(users).where(users.c.id == row.id).values(password_hash=hash_password(password))
        )
        # A password is changed because it, or a session, may be known to someone else.
        conn.execute(
            update(token_families)
            .where(token_families.c.user_id == row.id, token_families.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )


def delete_user(engine: Engine, username: str) -> None:
    """Delete a user with their tokens, tables' registry rows and jobs."""
    with engine.begin() as conn:
        result = conn.execute(delete(users).where(users.c.username == username))
    if result.rowcount == 0:
        raise NotFound(f"no user {username!r}", code="user_not_found")


@dataclass(frozen=True)
class VerifiedLogin:
    """A user whose password just verified, with the bookkeeping their login still owes."""

    user: User
    attempt: int  # its row in dms_login_failures
    old_hash: str = field(repr=False)
    new_hash: str | None = field(repr=False)


# An attempt is stored, and committed, before its password is checked, and counts as a failure
# until the login succeeds. Of N attempts at once the k-th to commit counts at least k, so no
# more than max_failures are checked in a window however many arrive together (counting first
# and storing after the ~20 ms check let every attempt in flight through). Rows older than the
# window never count; the periodic sweep deletes them (forget_old_attempts).
# The window's start, by the database's clock (the one `at` is stamped with): a web host whose
# clock is off must not shorten the window, or erase other hosts' attempts.
_SINCE = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, bindparam("window"))
_RECORD_ATTEMPT = (
    insert(login_failures).values(username=bindparam("username")).returning(login_failures.c.id)
)
# The attempts in the window and the user, in one statement (the count comes back for no user).
_attempts = (
    select(func.count().label("attempts"))
    .where(
        login_failures.c.username == bindparam("username"),
        login_failures.c.at > _SINCE,
    )
    .subquery()
)
_ATTEMPT = select(
    _attempts.c.attempts,
    users.c.id,
    users.c.username,
    users.c.email,
    users.c.is_admin,
    users.c.password_hash,
).select_from(_attempts.outerjoin(users, users.c.username == bindparam("username")))


def authenticate(
    engine: Engine, username: object, password: object, *, max_failures: int, window_seconds: int
) -> VerifiedLogin:
    """Return the verified login if the credentials match; raise RateLimited or InvalidCredentials.

    The attempt is stored first (see _RECORD_ATTEMPT); `record_login` clears it, in the
    login's own transaction, when the login succeeds.
    """
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise ValidationFailed(
            "username and password are required",
            errors={"username": ["required string"], "password": ["required string"]},
        )
    if not USERNAME_RE.fullmatch(username):
        # No such user can exist (names are checked when made): nothing to count or store
        # (a NUL, say, cannot even be stored), but the answer takes as long as any other.
        _verify(None, password)
        raise InvalidCredentials("invalid username or password")
    params = {"username": username, "window": window_seconds}
    # Autocommit: each statement commits at once, and no transaction stays open while the
    # password hash is checked. Counted in PostgreSQL, so every process and host sees them.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        attempt = conn.execute(_RECORD_ATTEMPT, {"username": username}).scalar_one()
        row = conn.execute(_ATTEMPT, params).one()
        if row.attempts > max_failures:
            # Refused unchecked, so not a failed login: it must not prolong the lock-out.
            conn.execute(delete(login_failures).where(login_failures.c.id == attempt))
            raise RateLimited(
                "too many failed logins for this user; try again later",
                detail={"retry_after": window_seconds},
            )
    # No such user verifies against a dummy hash (password_hash is NULL): just as slow.
    if not _verify(row.password_hash, password):
        raise InvalidCredentials("invalid username or password")  # its attempt stays counted
    # Hashed here, before the login's transaction, because hashing is slow on purpose.
    new_hash = _hasher.hash(password) if _hasher.check_needs_rehash(row.password_hash) else None
    return VerifiedLogin(_row_to_user(row), attempt, row.password_hash, new_hash)


def record_login(conn: Connection, login: VerifiedLogin) -> None:
    """Clear this attempt and the user's earlier ones (in the caller's transaction)."""
    # Attempts begun since are someone else's to settle.
    conn.execute(
        delete(login_failures).where(
            login_failures.c.username == login.user.username,
            login_failures.c.id <= login.attempt,
        )
    )


def upgrade_hash(engine: Engine, login: VerifiedLogin) -> None:
    """Replace an outdated hash with the one `authenticate` made, after the login committed."""
    # Its own short transaction: inside the login's, two logins of one user would each hold
    # a share lock on the row and wait for the other's to update it (a deadlock).
    if login.new_hash is None:
        return
    with engine.begin() as conn:
        # Only the hash just verified is replaced: a password set meanwhile stays.
        conn.execute(
            update(users)
            .where(users.c.id == login.user.id, users.c.password_hash == login.old_hash)
            .values(password_hash=login.new_hash)
        )


def forget_old_attempts(engine: Engine, window_seconds: int) -> int:
    """Delete login attempts older than the window (of every name); return how many."""
    # They never count again, but would stay for ever (a spray over many usernames leaves
    # rows for each): the periodic sweep runs this.
    with engine.begin() as conn:
        stale = delete(login_failures).where(login_failures.c.at <= _SINCE)
        return conn.execute(stale, {"window": window_seconds}).rowcount


def warm_up() -> None:
    """Make the dummy hash now, so the first unknown-user login is not the slower one."""
    _dummy_hash()


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        verified = _hasher.verify(password_hash or _dummy_hash(), password)
        return verified and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class InvalidCredentials(InvalidRequest):
    """Raised when a login's username or password is wrong."""

    code = "unauthorized"
