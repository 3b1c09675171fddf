"""JSON values read from PostgreSQL without loss: big integers and all decimals stay exact."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

_MAX_INT64 = 2**63 - 1


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


def dumps(value: Any) -> str:
    """Return `value` as JSON text (dates ISO 8601, decimals exact)."""
    return orjson.dumps(value, default=default).decode()
