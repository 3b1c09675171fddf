"""Fast, strict value converters behind `dms.engine.types`.

Every parser accepts strictly less than PostgreSQL's input function for its type, so a COPY
batch never fails on a value that passed here. They are hand-written (precompiled regexes,
`fullmatch`, no dateutil, no marshmallow) because the importer calls them once per cell.
`[0-9]` is used instead of `\\d` on purpose: `\\d` matches non-ASCII digits.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import cast

from dms.engine.errors import ConversionError

# --- integers ---------------------------------------------------------------------------

INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_INT = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str, type_name: str) -> int:
    """Return the integer in `text` (optional sign, ASCII digits) if it fits `type_name`."""
    if _INT.fullmatch(text) is None:
        raise ConversionError("not a valid integer")
    # The length guard keeps int() away from its 4300-digit limit.
    value = int(text) if len(text) <= 100 else None
    lo, hi = INT_RANGES[type_name]
    if value is None or not lo <= value <= hi:
        raise ConversionError(f"out of range for {type_name}")
    return value


def int_from_json(value: object, type_name: str) -> int:
    """Return `value` as an int in range; integral floats (3.0) count, bools do not."""
    # JSON has one number type, so 3.0 from a JavaScript client means 3.
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise ConversionError("not a valid integer")
    lo, hi = INT_RANGES[type_name]
    if not lo <= value <= hi:
        raise ConversionError(f"out of range for {type_name}")
    return value


# --- double precision -------------------------------------------------------------------

_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_double(text: str) -> float:
    """Return the finite float in `text` (decimal or scientific notation, no NaN/Infinity)."""
    if _FLOAT.fullmatch(text) is None:
        raise ConversionError("not a valid number")
    value = float(text)
    if math.isinf(value):
        raise ConversionError("out of range for double")
    # PostgreSQL rejects a non-zero literal that underflows to zero (1e-400).
    if value == 0.0 and text.lower().partition("e")[0].strip("+-.0"):
        raise ConversionError("out of range for double")
    return value


def double_from_json(value: object) -> float:
    """Return a JSON number as a finite float."""
    if type(value) not in (int, float):
        raise ConversionError("not a valid number")
    try:
        result = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise ConversionError("out of range for double") from None
    if not math.isfinite(result):
        raise ConversionError("not a finite number")
    return result


# --- numeric ----------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?([0-9]*)(?:\.([0-9]*))?")
# Limits of an unconstrained PostgreSQL numeric.
_MAX_WHOLE_DIGITS, _MAX_SCALE = 131072, 16383


def _decimal_match(text: str) -> re.Match[str]:
    match = _DECIMAL.fullmatch(text)
    if match is None or not (match[1] or match[2]):
        raise ConversionError("not a valid decimal number")
    return match


def fit_decimal(value: Decimal, precision: int | None, scale: int, label: str) -> Decimal:
    """Return `value` rounded like PostgreSQL to `scale` digits if it fits numeric(p,s)."""
    if not value.is_finite():
        raise ConversionError("not a finite number")
    if not value:
        value = value.copy_abs()  # PostgreSQL numeric has no negative zero
    if precision is None:
        scale = -cast(int, value.as_tuple().exponent)  # an int: value is finite
        if value and (value.adjusted() >= _MAX_WHOLE_DIGITS or scale > _MAX_SCALE):
            raise ConversionError(f"out of range for {label}")
        return value
    whole = precision - scale
    if value and value.adjusted() >= whole:
        raise ConversionError(f"out of range for {label}")
    # PostgreSQL rounds half away from zero, which is Decimal's ROUND_HALF_UP.
    rounded = value.quantize(
        Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=Context(prec=precision + 2)
    )
    if rounded and rounded.adjusted() >= whole:  # 9.995 -> 10.00 in numeric(3,2)
        raise ConversionError(f"out of range for {label}")
    return rounded if rounded else rounded.copy_abs()


def numeric_text(text: str, precision: int | None, scale: int, label: str) -> str:
    """Return COPY text for a plain decimal `text` (no exponent) that fits numeric(p,s)."""
    match = _decimal_match(text)
    whole, fraction = match[1].lstrip("0"), match[2] or ""
    if precision is None:
        if len(whole) > _MAX_WHOLE_DIGITS or len(fraction) > _MAX_SCALE:
            raise ConversionError(f"out of range for {label}")
        return text
    if len(fraction) <= scale:  # fast path: nothing to round
        if len(whole) > precision - scale:
            raise ConversionError(f"out of range for {label}")
        return text
    return format(fit_decimal(Decimal(text), precision, scale, label), "f")


def parse_numeric(text: str, precision: int | None, scale: int, label: str) -> Decimal:
    """Return the Decimal in a plain decimal `text`, rounded to fit numeric(p,s)."""
    _decimal_match(text)
    return fit_decimal(Decimal(text), precision, scale, label)


def numeric_from_json(value: object, precision: int | None, scale: int, label: str) -> Decimal:
    """Return a JSON int, float (via its repr) or decimal string as a fitting Decimal."""
    if type(value) is str:
        return parse_numeric(value, precision, scale, label)
    if type(value) is int:
        number = Decimal(value)
    elif type(value) is float:
        number = Decimal(repr(value))  # repr is the shortest text that round-trips
    else:
        raise ConversionError("not a valid decimal number")
    try:
        return fit_decimal(number, precision, scale, label)
    except InvalidOperation:
        raise ConversionError(f"out of range for {label}") from None


# --- boolean ----------------------------------------------------------------------------

_BOOL = {w: "t" for w in ("true", "t", "yes", "on", "1")} | {
    w: "f" for w in ("false", "f", "no", "off", "0")
}


def bool_text(text: str) -> str:
    """Return "t" or "f" for true/false/t/f/yes/no/on/off/1/0 in any case."""
    result = _BOOL.get(text)
    if result is None and text.isascii():
        result = _BOOL.get(text.lower())
    if result is None:
        raise ConversionError("not a valid boolean")
    return result


def bool_from_json(value: object) -> bool:
    """Return a JSON true/false; numbers and strings are not booleans."""
    if type(value) is not bool:
        raise ConversionError("not a valid boolean")
    return value


# --- dates and times --------------------------------------------------------------------

_DATE_PART = r"((?!0000)[0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME_PART = r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
# Offsets stop at ±14:59: real zones end at +14:00 and PostgreSQL's limit is higher.
_ZONE_PART = r"(Z|[+-](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)"
_DATE = re.compile(_DATE_PART)
_TIME = re.compile(_TIME_PART)
_STAMP = re.compile(_DATE_PART + "[T ]" + _TIME_PART + _ZONE_PART + "?")
DATE_MSG = "not a valid date (YYYY-MM-DD)"
TIME_MSG = "not a valid time (HH:MM[:SS[.ffffff]])"
STAMP_MSG = "not a valid timestamp (YYYY-MM-DD HH:MM[:SS[.ffffff]])"
STAMPTZ_MSG = "not a valid timestamp (YYYY-MM-DD HH:MM[:SS[.ffffff]][Z|±HH[:MM]])"


def _clock(match: re.Match[str], first: int) -> tuple[int, int, int, int]:
    hour, minute, second, fraction = match.group(first, first + 1, first + 2, first + 3)
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    return int(hour), int(minute), int(second or 0), micro


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    minutes = int(text[1:3]) * 60 + (int(text[-2:]) if len(text) > 3 else 0)
    return timezone(timedelta(minutes=-minutes if text[0] == "-" else minutes))


def parse_date(text: str) -> date:
    """Return the real calendar date in strict YYYY-MM-DD `text`."""
    match = _DATE.fullmatch(text)
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))  # type: ignore[index]
    except (TypeError, ValueError):  # no match, or a day the month does not have
        raise ConversionError(DATE_MSG) from None


def date_text(text: str) -> str:
    """Return `text` if it is a strict YYYY-MM-DD calendar date."""
    if _DATE.fullmatch(text) is None or (text[8:] > "28" and _bad_day(text)):
        raise ConversionError(DATE_MSG)
    return text


def _bad_day(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return True
    return False


def parse_timestamp(text: str, tz: bool) -> datetime:
    """Return the datetime in `text`; aware (UTC if no zone) when `tz`, else naive."""
    match = _STAMP.fullmatch(text)
    if match is None or (match[8] is not None and not tz):
        raise ConversionError(STAMPTZ_MSG if tz else STAMP_MSG)
    try:
        value = datetime(
            int(match[1]), int(match[2]), int(match[3]), *_clock(match, 4),
            tzinfo=_zone(match[8]) if tz else None,
        )  # fmt: skip
        if tz:  # one instant, one spelling: what PostgreSQL returns in a UTC session
            value = value.astimezone(UTC)
    except ValueError:
        raise ConversionError(STAMPTZ_MSG if tz else STAMP_MSG) from None
    except OverflowError:
        raise ConversionError("out of range for timestamptz") from None
    return value


def timestamp_text(text: str, tz: bool) -> str:
    """Return COPY text for a timestamp; timestamptz text always carries its zone."""
    match = _STAMP.fullmatch(text)
    if match is None or (match[8] is not None and not tz):
        raise ConversionError(STAMPTZ_MSG if tz else STAMP_MSG)
    if (text[8:10] > "28" and _bad_day(text)) or (tz and text[:4] in ("0001", "9999")):
        parse_timestamp(text, tz)  # rare: let the full parser pick the message
    if not tz:
        return text
    # An explicit +00 makes the value independent of the session TimeZone.
    zone = match[8]
    if zone is None:
        return text + "+00"
    return text[:-1] + "+00" if zone == "Z" else text


def parse_time(text: str) -> time:
    """Return the time of day in strict HH:MM[:SS[.ffffff]] `text`."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ConversionError(TIME_MSG)
    return time(*_clock(match, 1))


def time_text(text: str) -> str:
    """Return `text` if it is a strict HH:MM[:SS[.ffffff]] time of day."""
    if _TIME.fullmatch(text) is None:
        raise ConversionError(TIME_MSG)
    return text


# --- uuid -------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def uuid_text(text: str) -> str:
    """Return `text` if it is a canonical 8-4-4-4-12 hex UUID (any case)."""
    if _UUID.fullmatch(text) is None:
        raise ConversionError("not a valid UUID")
    return text


# --- text -------------------------------------------------------------------------------

# PostgreSQL text cannot hold NUL; unpaired surrogates cannot be encoded to UTF-8.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    # The last label: letters, or an IDN top-level domain in punycode (xn--p1ai for .рф).
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)


def text_text(text: str) -> str:
    """Return `text` if PostgreSQL can store it: no NUL, no unpaired surrogate."""
    if "\x00" in text or (not text.isascii() and _BAD_CHARS.search(text)):
        raise ConversionError("must not contain NUL characters or unpaired surrogates")
    return text


def varchar_text(text: str, max_length: int) -> str:
    """Return `text` if it is storable text of at most `max_length` characters."""
    # len() counts code points, as PostgreSQL counts characters in UTF-8.
    if len(text) > max_length:
        raise ConversionError(f"must be at most {max_length} characters")
    return text_text(text)


def email_text(text: str) -> str:
    """Return `text` if it is a plausible address: local@domain.tld, ASCII, ≤ 254 chars."""
    if len(text) > 254 or EMAIL_PATTERN.fullmatch(text) is None or len(text.partition("@")[0]) > 64:
        raise ConversionError("not a valid email address")
    return text


# --- jsonb ------------------------------------------------------------------------------

MAX_JSON_DEPTH = 256
# Bounds well inside what PostgreSQL's numeric (which stores jsonb numbers) accepts.
_MAX_JSON_INT = 10**1000
_MAX_JSON_NUMBER_CHARS = 1000


def _json_float(text: str) -> float:
    exponent = text.lower().partition("e")[2]
    if len(text) > _MAX_JSON_NUMBER_CHARS or (exponent and abs(int(exponent)) > 1000):
        raise ConversionError("JSON number out of range")
    value = float(text)
    if math.isinf(value):
        raise ConversionError("JSON number out of range")
    return value


def _json_constant(text: str) -> object:
    raise ConversionError("NaN and Infinity are not valid JSON")


def check_json(value: object) -> object:
    """Return `value` if it is plain JSON that jsonb can store (no \\u0000, finite numbers)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _BAD_CHARS.search(item):
                raise ConversionError("JSON strings must not contain \\u0000 or lone surrogates")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ConversionError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    raise ConversionError("JSON object keys must be strings")
                stack.extend((key, depth) for key in item)
                item = list(item.values())
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ConversionError("not a finite number")
        elif isinstance(item, int):  # bool included
            if not -_MAX_JSON_INT < item < _MAX_JSON_INT:
                raise ConversionError("JSON number out of range")
        elif item is not None:
            raise ConversionError("not a JSON value")
    return value


def parse_json(text: str) -> object:
    """Return the JSON value in `text` if jsonb would accept it."""
    try:
        value = json.loads(text, parse_float=_json_float, parse_constant=_json_constant)
    except ConversionError:
        raise
    except (ValueError, RecursionError):
        raise ConversionError("not valid JSON") from None
    return check_json(value)


def parse_uuid(text: str) -> uuid.UUID:
    """Return the UUID in canonical `text`."""
    return uuid.UUID(uuid_text(text))
