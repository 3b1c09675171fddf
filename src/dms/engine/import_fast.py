"""Prove most CSV values valid in bulk, so the registry's converter runs only on the rest.

Each check accepts a *subset* of what the column type's `from_csv` accepts, and only values
that `from_csv` returns unchanged (test_importing pins both properties). Values are tested 64
at a time with one regex over the block joined by newlines (no good value holds a newline), so
the per-value loop stays in C; a block that fails goes value by value through `from_csv`, which
alone decides and words the error. A type without a check is always converted value by value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dms.engine.types import (
    BigIntType,
    BooleanType,
    ColumnType,
    DateType,
    DoubleType,
    EmailType,
    IntegerType,
    NumericType,
    SmallIntType,
    TimestampType,
    TimestampTzType,
    TimeType,
    UuidType,
    VarcharType,
)

__all__ = ["BLOCK", "PLAIN_TYPES", "FastCheck", "fast_check", "suspects"]

BLOCK = 64
SMALLEST = 8  # a failed block is halved down to this many values, then converted one by one
# Types whose converted CSV text never holds a tab, newline, carriage return or backslash, so
# COPY needs no escaping (text, varchar, jsonb and any type added later are scanned).
PLAIN_TYPES = frozenset(
    {
        SmallIntType,
        IntegerType,
        BigIntType,
        NumericType,
        DoubleType,
        BooleanType,
        DateType,
        TimestampType,
        TimestampTzType,
        TimeType,
        UuidType,
        EmailType,
    }
)
_DATE = r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # days 29-31: converter
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_UUID = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
# A subset of converters.EMAIL_PATTERN without its backtracking: possessive runs (Python 3.11),
# labels of letters and digits joined by single hyphens, a top-level domain of letters. Twice
# as fast as the converter's pattern; an address outside it still goes through the converter.
_EMAIL = (
    r"[A-Za-z0-9_+-]++(?:\.[A-Za-z0-9_+-]++)*+"
    r"@(?:[A-Za-z0-9]++(?:-[A-Za-z0-9]++)*+\.)++[A-Za-z]{2,63}+"
)


@dataclass(frozen=True)
class FastCheck:
    """A block test: every value matches `pattern` (if any) and is at most `max_len` long."""

    pattern: re.Pattern[str] | None
    max_len: int | None = None

    def passes(self, block: list[str]) -> bool:
        """Return True if every value of `block` is proven valid (empty cells pass)."""
        if self.max_len is not None and max(map(len, block)) > self.max_len:
            return False
        if self.pattern is None:
            return True
        joined = "\n".join(block)
        # A value holding a newline would pass as two: only the joining newlines may be there.
        return joined.count("\n") == len(block) - 1 and self.pattern.fullmatch(joined) is not None


def _block(value: str, max_len: int | None = None) -> FastCheck:
    # Empty cells pass here; the caller turns them into defaults or NULLs. Possessive (never
    # backtracking) is faster, and can only accept less, never more.
    return FastCheck(re.compile(f"(?:{value})?+(?:\n(?:{value})?+)*+"), max_len)


def fast_check(column_type: ColumnType) -> FastCheck | None:
    """Return the bulk check for `column_type`, or None if it has none."""
    kind = type(column_type)
    if kind in (SmallIntType, IntegerType, BigIntType):
        digits = {SmallIntType: 4, IntegerType: 9, BigIntType: 18}[kind]  # always in range
        return _block(rf"[+-]?+[0-9]{{1,{digits}}}+")
    if kind is NumericType:
        assert isinstance(column_type, NumericType)
        if column_type.precision is None:
            return _block(r"[+-]?+[0-9]{1,1000}+(?:\.[0-9]{1,1000}+)?+")
        whole, scale = column_type.precision - column_type.scale, column_type.scale
        if whole < 1:
            return None
        fraction = rf"(?:\.[0-9]{{1,{scale}}}+)?+" if scale else ""
        return _block(rf"[+-]?+[0-9]{{1,{whole}}}+{fraction}")  # no rounding needed: unchanged
    if kind is DoubleType:
        # No exponent: always finite, never underflows.
        return _block(r"[+-]?+[0-9]{1,15}+(?:\.[0-9]{1,15}+)?+")
    if kind is DateType:
        return _block(_DATE)
    if kind is TimestampType:  # not timestamptz: its converter appends the zone
        return _block(f"{_DATE}[T ]{_TIME}")
    if kind is TimeType:
        return _block(_TIME)
    if kind is UuidType:
        return _block(_UUID)
    if kind is EmailType:
        # 64 characters bound both the local part and the whole (the converter's limits).
        return _block(_EMAIL, max_len=64)
    if kind is VarcharType:
        assert isinstance(column_type, VarcharType)
        return FastCheck(None, column_type.length)
    return None


def suspects(values: list[str], check: FastCheck) -> list[int]:
    """Return the indexes of the values `check` could not prove valid."""
    out: list[int] = []
    for start in range(0, len(values), BLOCK):
        block = values[start : start + BLOCK]
        if not check.passes(block):
            _narrow(values, start, len(block), check, out)
    return out


def _narrow(values: list[str], start: int, size: int, check: FastCheck, out: list[int]) -> None:
    """Add to `out` the indexes in values[start:start + size] that halves of it cannot prove."""
    # A failed block usually holds one bad value: halving costs a few regex runs, where the
    # converter on all 64 values cost as much as checking the whole column in bulk.
    if size <= SMALLEST:
        out.extend(range(start, start + size))
        return
    half = size // 2
    for low, count in ((start, half), (start + half, size - half)):
        if not check.passes(values[low : low + count]):
            _narrow(values, low, count, check, out)
