"""JSON values read from PostgreSQL without loss: big integers and all decimals stay exact."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

_MAX_INT64 = 2**63 - 1
_MAX_UINT64 = 2**64 - 1


def _parse_int(text: str) -> int | Decimal:
    value = int(text)
    # orjson writes only 64-bit integers; a bigger one travels as an exact decimal.
    return value if -_MAX_INT64 - 1 <= value <= _MAX_INT64 else Decimal(text)


def loads(text: str | bytes) -> Any:
    """Parse jsonb text from PostgreSQL: big integers and fractions as exact Decimals."""
    return json.loads(text, parse_int=_parse_int, parse_float=Decimal)


def plain_decimal(value: Decimal) -> str:
    """Return a decimal in positional notation (never 1E-7), every digit kept."""
    return format(value, "f")


def default(value: Any) -> Any:
    """orjson hook: Decimals become exact JSON numbers."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(plain_decimal(value))
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def writable(value: Any) -> Any:
    """Return `value` with every integer orjson cannot write (beyond 64 bits) as an exact Fragment.

    Such integers come from JSON parsed with plain ints, e.g. a jsonb default 1e20.
    """
    if isinstance(value, dict):
        return {key: writable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [writable(item) for item in value]
    if type(value) is int and not -_MAX_INT64 - 1 <= value <= _MAX_UINT64:
        return orjson.Fragment(str(value))
    return value


def dumps(value: Any) -> str:
    """Return `value` as JSON text (dates ISO 8601, decimals and big integers exact)."""
    try:
        return orjson.dumps(value, default=default).decode()
    except orjson.JSONEncodeError:
        # Rare: an integer beyond 64 bits (anything else fails again, and raises).
        return orjson.dumps(writable(value), default=default).decode()
