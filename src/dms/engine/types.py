"""The one type registry: each column type knows its SQL type, marshmallow field and converters.

The API (through `ColumnType.field`) and the importer (through `ColumnType.from_csv`) call the
same converters in `dms.engine.converters`, so both validate identically. Adding a type is one
`ColumnType` subclass and one `TYPES.register(...)` line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from marshmallow import ValidationError, fields
from sqlalchemy.dialects import postgresql as pg

from dms.engine import converters as conv
from dms.engine import jsonvalues
from dms.engine.errors import ConversionError, InvalidType

__all__ = ["TYPES", "ColumnField", "ColumnSpec", "ColumnType", "TypeRegistry", "parse_column_spec"]

MODIFIERS = ["unique", "not null", "required", "default <literal>", "index"]


class ColumnType:
    """One concrete column type, e.g. varchar(20); subclasses override the converters."""

    name: ClassVar[str] = ""
    searchable: ClassVar[bool] = False
    orderable: ClassVar[bool] = True
    # Unquoted default literals that make sense for the type ("number", "boolean").
    literals: ClassVar[frozenset[str]] = frozenset()
    invalid: ClassVar[str] = "not a valid value"  # message for a JSON value of the wrong kind
    sa_factory: ClassVar[type[sa.types.TypeEngine[Any]]]

    def __init__(self, params: tuple[int, ...] = ()) -> None:
        if params:
            raise InvalidType(f"type {self.name} takes no parameters")
        self.params = params

    @property
    def spec(self) -> str:
        """Return the canonical type text, e.g. "varchar(20)" or "numeric(10,2)"."""
        return self.name + (f"({','.join(map(str, self.params))})" if self.params else "")

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        """Return the SQLAlchemy type for DDL and binds."""
        return self.sa_factory()

    def from_text(self, text: str) -> Any:
        """Return the Python value for `text` under the CSV rules (used for defaults too)."""
        raise NotImplementedError

    def from_csv(self, text: str) -> str:
        """Return the text to hand PostgreSQL COPY for a non-empty CSV cell."""
        self.from_text(text)
        return text

    def to_text(self, value: Any) -> str:
        """Return a value of the type (a default) as text `from_text`, `from_csv` and a SQL cast
        to the type all accept: the one spelling of defaults in DDL and in imports."""
        return str(value)

    def from_registry(self, stored: str) -> Any:
        """Return the default the registry holds, from its jsonb's text (`default_value::text`).

        Parsed here rather than by the session's JSON deserializer (which reads numbers as exact
        Decimals), so a default reads back the same whatever that is. A JSON string holds the
        value's text (numerics, dates, uuids…); a number or a boolean is its own text.
        """
        return self.from_text(json.loads(stored) if stored.startswith('"') else stored)

    def from_json(self, value: object) -> Any:
        """Return the Python value for the driver from a JSON value."""
        if type(value) is not str:
            raise ConversionError(self.invalid)
        return self.from_text(value)

    def to_json(self, value: Any) -> Any:
        """Return a value read by psycopg as something orjson serializes losslessly."""
        return value

    def field(self, *, required: bool, allow_none: bool) -> fields.Field:
        """Return a marshmallow field that validates through `from_json`."""
        return ColumnField(self, required=required, allow_none=allow_none)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params

    def __hash__(self) -> int:
        return hash((self.name, self.params))

    def __repr__(self) -> str:
        return f"<ColumnType {self.spec}>"


class ColumnField(fields.Field):
    """Marshmallow field whose validation is its column type's `from_json`."""

    def __init__(self, column_type: ColumnType, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column_type = column_type

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return self.column_type.from_json(value)
        except ConversionError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else self.column_type.to_json(value)


class TextType(ColumnType):
    name, searchable, invalid, sa_factory = "text", True, "not a valid string", sa.Text
    from_text = from_csv = staticmethod(conv.text_text)


class VarcharType(TextType):
    name = "varchar"

    def __init__(self, params: tuple[int, ...] = ()) -> None:
        if len(params) != 1 or not 1 <= params[0] <= 10485760:
            raise InvalidType("varchar needs a length from 1 to 10485760: varchar(n)")
        self.params = params
        self.length = params[0]

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        return sa.String(self.length)

    def from_text(self, text: str) -> str:
        return conv.varchar_text(text, self.length)

    def from_csv(self, text: str) -> str:
        return conv.varchar_text(text, self.length)


class EmailType(TextType):
    name = "email"
    from_text = from_csv = staticmethod(conv.email_text)


class _IntegerType(ColumnType):
    literals, invalid = frozenset({"number"}), "not a valid integer"

    def from_text(self, text: str) -> int:
        return conv.parse_int(text, self.name)

    def from_json(self, value: object) -> int:
        return conv.int_from_json(value, self.name)


class SmallIntType(_IntegerType):
    name, sa_factory = "smallint", sa.SmallInteger


class IntegerType(_IntegerType):
    name, sa_factory = "integer", sa.Integer


class BigIntType(_IntegerType):
    name, sa_factory = "bigint", sa.BigInteger


class DoubleType(ColumnType):
    name, literals, sa_factory = "double", frozenset({"number"}), pg.DOUBLE_PRECISION
    from_text = staticmethod(conv.parse_double)
    from_json = staticmethod(conv.double_from_json)


class NumericType(ColumnType):
    name, literals = "numeric", frozenset({"number"})

    def __init__(self, params: tuple[int, ...] = ()) -> None:
        if len(params) == 1:
            params = (params[0], 0)  # numeric(p) means scale 0, as in PostgreSQL
        if params and not (len(params) == 2 and 1 <= params[0] <= 1000 and params[1] <= params[0]):
            raise InvalidType("numeric needs 1 <= p <= 1000 and 0 <= s <= p: numeric(p,s)")
        self.params = params
        self.precision: int | None = params[0] if params else None
        self.scale = params[1] if params else 0

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        return sa.Numeric(self.precision, self.scale if self.params else None)

    def from_text(self, text: str) -> Decimal:
        return conv.parse_numeric(text, self.precision, self.scale, self.spec)

    def from_csv(self, text: str) -> str:
        return conv.numeric_text(text, self.precision, self.scale, self.spec)

    def from_json(self, value: object) -> Decimal:
        return conv.numeric_from_json(value, self.precision, self.scale, self.spec)

    def to_json(self, value: Any) -> Any:
        # A Fragment keeps every digit; a float would not. NaN is not JSON.
        if isinstance(value, Decimal):
            return orjson.Fragment(format(value, "f")) if value.is_finite() else None
        return value

    def to_text(self, value: Any) -> str:
        return jsonvalues.plain_decimal(value) if isinstance(value, Decimal) else str(value)


class BooleanType(ColumnType):
    name, literals, sa_factory = "boolean", frozenset({"boolean"}), sa.Boolean
    from_csv = staticmethod(conv.bool_text)
    from_json = staticmethod(conv.bool_from_json)

    def from_text(self, text: str) -> bool:
        return conv.bool_text(text) == "t"

    def to_text(self, value: Any) -> str:
        return "true" if value else "false"


class _TemporalType(ColumnType):
    def to_json(self, value: Any) -> Any:
        return value.isoformat() if isinstance(value, date | time) else value

    def to_text(self, value: Any) -> str:
        # The converters accept "T" or a blank between date and time; COPY and casts do too.
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()


class DateType(_TemporalType):
    name, invalid, sa_factory = "date", conv.DATE_MSG, sa.Date
    from_text = staticmethod(conv.parse_date)
    from_csv = staticmethod(conv.date_text)


class TimestampType(_TemporalType):
    name, invalid, tz = "timestamp", conv.STAMP_MSG, False

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        return pg.TIMESTAMP(timezone=self.tz)

    def from_text(self, text: str) -> datetime:
        return conv.parse_timestamp(text, self.tz)

    def from_csv(self, text: str) -> str:
        return conv.timestamp_text(text, self.tz)


class TimestampTzType(TimestampType):
    name, invalid, tz = "timestamptz", conv.STAMPTZ_MSG, True


class TimeType(_TemporalType):
    name, invalid, sa_factory = "time", conv.TIME_MSG, pg.TIME
    from_text = staticmethod(conv.parse_time)
    from_csv = staticmethod(conv.time_text)


class UuidType(ColumnType):
    name, invalid = "uuid", "not a valid UUID"
    from_text = staticmethod(conv.parse_uuid)
    from_csv = staticmethod(conv.uuid_text)

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        return pg.UUID(as_uuid=True)

    def to_json(self, value: Any) -> Any:
        return None if value is None else str(value)


class JsonbType(ColumnType):
    name, orderable, literals = "jsonb", False, frozenset({"number", "boolean"})
    sa_factory = pg.JSONB
    from_text = staticmethod(conv.parse_json)
    from_json = staticmethod(conv.check_json)
    # orjson writes only 64-bit integers: a default such as 1e20 is shown exactly.
    to_json = staticmethod(jsonvalues.writable)

    def to_text(self, value: Any) -> str:
        return jsonvalues.dumps(value)  # exact: Decimals and big integers keep every digit

    def from_registry(self, stored: str) -> Any:
        return self.from_text(stored)  # the stored JSON is the value itself

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        """Return JSONB where Python None is SQL NULL (so isnull filters see it), not 'null'."""
        return pg.JSONB(none_as_null=True)


Factory = Callable[[tuple[int, ...]], ColumnType]  # params -> type; raises InvalidType


class TypeRegistry:
    """Type names and aliases -> factories; refuses a name registered twice."""

    def __init__(self) -> None:
        self._factories: dict[str, Factory] = {}
        self._accepted: list[str] = []

    def register(self, name: str, factory: Factory, *aliases: str, params: str = "") -> None:
        """Register `factory(params) -> ColumnType` under `name` and `aliases`."""
        for word in (name, *aliases):
            if word in self._factories:
                raise ValueError(f"column type {word!r} is already registered")
        for word in (name, *aliases):
            self._factories[word] = factory
            self._accepted.append(word + params)

    def accepted(self) -> list[str]:
        """Return the accepted type names and aliases, e.g. ["text", "varchar(n)", …]."""
        return list(self._accepted)

    def build(self, name: str, params: tuple[int, ...] = ()) -> ColumnType:
        """Return the column type `name` (lower case) with `params`."""
        factory = self._factories.get(name)
        if factory is None:
            raise self.error(f"unknown type {name[:40]!r}")
        return factory(params)

    def parse_type(self, text: str) -> ColumnType:
        """Return the column type for a type text such as "VARCHAR(20)" (no modifiers)."""
        tokens = _tokenize(text, self)
        column_type = _take_type(tokens, self)
        if tokens:
            raise self.error(f"unexpected {_show(tokens[-1])} after the type")
        return column_type

    def error(self, problem: str) -> InvalidType:
        """Return an InvalidType for `problem` that lists accepted types and modifiers."""
        return InvalidType(
            f"{problem}; accepted types: {', '.join(self._accepted)}; "
            f"modifiers: {', '.join(MODIFIERS)}",
            detail={"accepted_types": self.accepted(), "accepted_modifiers": list(MODIFIERS)},
        )


TYPES = TypeRegistry()
TYPES.register("text", TextType)
TYPES.register("varchar", VarcharType, params="(n)")
TYPES.register("integer", IntegerType, "int")
TYPES.register("bigint", BigIntType)
TYPES.register("smallint", SmallIntType)
TYPES.register("double", DoubleType, "float", "real")
TYPES.register("numeric", NumericType, "decimal", params="(p,s)")
TYPES.register("boolean", BooleanType, "bool")
TYPES.register("date", DateType)
TYPES.register("timestamp", TimestampType, "datetime")
TYPES.register("timestamptz", TimestampTzType)
TYPES.register("time", TimeType)
TYPES.register("uuid", UuidType)
TYPES.register("jsonb", JsonbType, "json")
TYPES.register("email", EmailType)


@dataclass(frozen=True)
class ColumnSpec:
    """A parsed column definition: type plus modifiers."""

    type: ColumnType
    unique: bool = False
    nullable: bool = True
    default: object = None
    has_default: bool = False
    index: bool = False

    @property
    def required(self) -> bool:
        """Return True if a new row must give this column a value (not null, no default)."""
        return not self.nullable and not self.has_default

    def describe(self, name: str) -> dict[str, Any]:
        """Return the column as the API shows it (default made JSON-native by `to_json`)."""
        default = None if self.default is None else self.type.to_json(self.default)
        return {
            "name": name,
            "type": self.type.spec,
            "unique": self.unique,
            "nullable": self.nullable,
            "default": default,
            "index": self.index,
        }


def parse_column_spec(text: str, registry: TypeRegistry = TYPES) -> ColumnSpec:
    """Return the ColumnSpec for "type modifiers…", e.g. "varchar(20) not null unique"."""
    tokens = _tokenize(text, registry)
    column_type = _take_type(tokens, registry)
    seen: dict[str, object] = {}
    while tokens:
        word = tokens.pop()
        if word == "not":
            if _pop(tokens) != "null":
                raise registry.error("expected null after not")
            word = "not null"
        elif word == "required":
            word = "not null"
        elif word not in ("unique", "index", "default"):
            raise registry.error(f"unexpected {_show(word)}")
        if word in seen:
            raise registry.error(f"modifier {word!r} given twice")
        seen[word] = _default(column_type, _pop(tokens), registry) if word == "default" else True
    default = seen.get("default")
    if "default" in seen and default is None and "not null" in seen:
        raise InvalidType(f"default null does not fit a not null column of type {column_type.spec}")
    return ColumnSpec(
        column_type,
        unique="unique" in seen,
        nullable="not null" not in seen,
        default=default,
        has_default="default" in seen,
        index="index" in seen,
    )


def _default(column_type: ColumnType, token: str, registry: TypeRegistry) -> Any:
    """Return the Python value of a default literal token, converted by the column type."""
    if token == "null":
        return None
    if token.startswith("'"):
        literal: str | None = token[1:-1].replace("''", "'")
    elif _NUMBER.fullmatch(token):
        literal = token if "number" in column_type.literals else None
    elif token in ("true", "false"):
        literal = token if "boolean" in column_type.literals else None
    else:
        raise registry.error("default needs a literal: a number, 'text', true, false or null")
    shown = token[:40] if token.isascii() and token.isprintable() else ascii(token[:40])
    problem = f"default {shown} does not fit type {column_type.spec}"
    if literal is None:
        raise InvalidType(problem)
    try:
        return column_type.from_text(literal)
    except ConversionError as exc:
        raise InvalidType(f"{problem}: {exc}") from None


# The whole mini-language has five kinds of token: blanks, words, numbers, '…' strings with
# '' escapes, and ( ) , — any other character stops parsing, so raw SQL cannot get through.
_NUMBER_TEXT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_TOKEN = re.compile(
    rf"[ \t\r\n]+|[A-Za-z_][A-Za-z0-9_]*|{_NUMBER_TEXT}(?![A-Za-z0-9_.])|'(?:[^']|'')*'|[(),]"
)
_NUMBER = re.compile(_NUMBER_TEXT)
_WORD = re.compile("[a-z_][a-z0-9_]*")
_PARAM = re.compile("[0-9]{1,9}")


def _tokenize(text: object, registry: TypeRegistry) -> list[str]:
    """Return the tokens of `text` (words lower-cased) in reverse, so pop() takes the next."""
    if not isinstance(text, str):
        raise registry.error("a column type must be a string")
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            what = "unterminated string" if text[pos] == "'" else f"unexpected {text[pos]!r}"
            raise registry.error(f"{what} at position {pos + 1}")
        token, pos = match.group(), match.end()
        if not token.isspace():
            tokens.append(token if token[0] == "'" else token.lower())
    tokens.reverse()
    return tokens


def _pop(tokens: list[str]) -> str:
    return tokens.pop() if tokens else ""


def _show(token: str) -> str:
    return "string literal" if token.startswith("'") else repr(token[:40])


def _take_type(tokens: list[str], registry: TypeRegistry) -> ColumnType:
    """Pop `name` or `name(p[,s])` off `tokens` and return the built type."""
    name = _pop(tokens)
    if not _WORD.fullmatch(name):
        raise registry.error("expected a type name")
    params: list[int] = []
    if tokens and tokens[-1] == "(":
        tokens.pop()
        while True:
            number = _pop(tokens)
            if not _PARAM.fullmatch(number):
                raise registry.error("type parameters must be whole numbers")
            params.append(int(number))
            closing = _pop(tokens)
            if closing == ")":
                break
            if closing != "," or len(params) == 2:
                raise registry.error("expected , or ) in type parameters")
    return registry.build(name, tuple(params))
