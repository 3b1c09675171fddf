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
# Possessive quantifiers (Python 3.11) never backtrack: faster, and they can only accept less.
# Before 3.11.5 a possessive group could match a partial last repetition (CPython gh-106052),
# accepting values like "-" or "a@b." (Debian 12 ships 3.11.2): there, plain ones are used.
POSSESSIVE = re.fullmatch("(?:ab?c)*+", "a") is None


def _email(p: str) -> str:
    # A subset of converters.EMAIL_PATTERN without its backtracking: labels of letters and
    # digits joined by single hyphens, a top-level domain of letters. Twice as fast as the
    # converter's pattern; an address outside it still goes through the converter.
    return (
        rf"[A-Za-z0-9_+-]+{p}(?:\.[A-Za-z0-9_+-]+{p})*{p}"
        rf"@(?:[A-Za-z0-9]+{p}(?:-[A-Za-z0-9]+{p})*{p}\.)+{p}[A-Za-z]{{2,63}}{p}"
    )


def _whole(kind: type, p: str) -> str:
    # Always in range: up to 4/9/18 digits, and the 10/19-digit values (epoch seconds,
    # snowflake ids) below 2**31 / 2**63 whose first digit settles it. The longer branch
    # first: once a possessive group has matched, it never tries another branch.
    if kind is SmallIntType:
        return rf"[+-]?{p}[0-9]{{1,4}}{p}"
    if kind is IntegerType:
        return rf"[+-]?{p}(?:1[0-9]{{9}}|[0-9]{{1,9}}{p})"
    return rf"[+-]?{p}(?:[1-8][0-9]{{18}}|[0-9]{{1,18}}{p})"


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


def _block(value: str, p: str, max_len: int | None = None) -> FastCheck:
    # Empty cells pass here; the caller turns them into defaults or NULLs.
    return FastCheck(re.compile(f"(?:{value})?{p}(?:\n(?:{value})?{p})*{p}"), max_len)


def fast_check(column_type: ColumnType, possessive: bool = POSSESSIVE) -> FastCheck | None:
    """Return the bulk check for `column_type`, or None if it has none."""
    kind, P = type(column_type), "+" if possessive else ""  # noqa: N806 - reads like regex
    if kind in (SmallIntType, IntegerType, BigIntType):
        return _block(_whole(kind, P), P)
    if kind is NumericType:
        assert isinstance(column_type, NumericType)
        if column_type.precision is None:
            return _block(rf"[+-]?{P}[0-9]{{1,1000}}{P}(?:\.[0-9]{{1,1000}}{P})?{P}", P)
        whole, scale = column_type.precision - column_type.scale, column_type.scale
        if whole < 1:
            return None
        fraction = rf"(?:\.[0-9]{{1,{scale}}}{P})?{P}" if scale else ""
        return _block(rf"[+-]?{P}[0-9]{{1,{whole}}}{P}{fraction}", P)  # unchanged: no rounding
    if kind is DoubleType:
        # No exponent: always finite, never underflows.
        return _block(rf"[+-]?{P}[0-9]{{1,15}}{P}(?:\.[0-9]{{1,15}}{P})?{P}", P)
    if kind is DateType:
        return _block(_DATE, P)
    if kind is TimestampType:  # not timestamptz: its converter appends the zone
        return _block(f"{_DATE}[T ]{_TIME}", P)
    if kind is TimeType:
        return _block(_TIME, P)
    if kind is UuidType:
        return _block(_UUID, P)
    if kind is EmailType:
        # 64 characters bound both the local part and the whole (the converter's limits).
        return _block(_email(P), P, max_len=64)
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
    # converter on all 64 values cost as much as checking the whole column in bulk. When both
    # halves fail, the values are likely all of a kind the check does not cover (10-digit
    # integers, exotic addresses): stop halving and let the converter decide them all.
    if size > SMALLEST:
        half = size // 2
        failed = [
            (low, count)
            for low, count in ((start, half), (start + half, size - half))
            if not check.passes(values[low : low + count])
        ]
        if len(failed) < 2:
            for low, count in failed:
                _narrow(values, low, count, check, out)
            return
    out.extend(range(start, start + size))
