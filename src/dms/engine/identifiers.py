"""The one validator for user-chosen table and column names (SPEC §2).

The API calls it on input and the engine calls it again before building a `Table`, so a name
that reaches SQLAlchemy is always a plain lower-case ASCII identifier.
"""

from __future__ import annotations

import re

from dms.engine.errors import InvalidName

__all__ = ["RESERVED_KEYWORDS", "SYSTEM_COLUMNS", "validate_identifier"]

# Category R of pg_get_keywords() on PostgreSQL 18.6 (`select word from pg_get_keywords()
# where catcode = 'R'`). Names are always quoted by SQLAlchemy, but a reserved word as a name
# would break hand-written SQL, psql sessions and PostgREST-style tools of our users.
RESERVED_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign
    from grant group having in initially intersect into lateral leading limit localtime
    localtimestamp not null offset on only or order placing primary references returning
    select session_user some symmetric system_user table then to trailing true union unique
    user using variadic when where window with
    """.split()
)

SYSTEM_COLUMNS = frozenset({"oid", "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"})

_PATTERN = "^[a-z_][a-z0-9_]*$"
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL would silently truncate longer names
_KINDS = ("table", "column")


def validate_identifier(name: object, kind: str) -> str:
    """Return `name` lower-cased if it is a valid `kind` ("table" or "column") name."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    if not isinstance(name, str):
        raise InvalidName(f"{kind} name must be a string")
    # Checked before lower(): lower() maps some non-ASCII letters (Kelvin sign) to ASCII.
    if not name.isascii():
        raise InvalidName(
            f"{kind} name must match {_PATTERN} (ASCII letters, digits, underscore; "
            "not starting with a digit)"
        )
    if not 1 <= len(name) <= _MAX_BYTES:
        raise InvalidName(f"{kind} name must be 1-{_MAX_BYTES} bytes")
    lowered = name.lower()
    if _NAME.fullmatch(lowered) is None:
        raise InvalidName(
            f"{kind} name must match {_PATTERN} (letters, digits, underscore; "
            "not starting with a digit)"
        )
    if lowered in RESERVED_KEYWORDS:
        raise InvalidName(f"{kind} name {lowered!r} is a reserved PostgreSQL keyword")
    if lowered.startswith(("dms_", "pg_")):
        raise InvalidName(f"{kind} name {lowered!r} must not start with dms_ or pg_")
    if kind == "column":
        if lowered == "id":
            raise InvalidName("column name 'id' is reserved")
        if lowered in SYSTEM_COLUMNS:
            raise InvalidName(f"column name {lowered!r} is a system column")
    return lowered


def name_of(key: object) -> str:
    """Return a name given by a request or file as compared with stored ones: ASCII lower-cased.

    str.lower() maps some non-ASCII letters to ASCII (the Kelvin sign to "k"); stored names are
    ASCII, so a non-ASCII name must stay as it is and match nothing.
    """
    text = key if isinstance(key, str) else str(key)
    return text.lower() if text.isascii() else text
