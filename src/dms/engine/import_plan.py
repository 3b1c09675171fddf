"""Parsed CSV records -> batches of COPY text, each column converted by its type's `from_csv`.

Work is done a column of a batch at a time: `import_fast` proves most values valid in bulk and
the registry's converter runs on the rest (or, for types without a bulk check, on every value
through `map`, one exception per bad value). Cells: an empty cell is the column's default if it
has one, else NULL; NULL into a not-null column is a row error ("required"); columns absent
from the file get their database default. Every bad field of a row is reported; the row counts
once in `rejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from dms.engine.catalog import TableDef
from dms.engine.csvreader import Record
from dms.engine.import_fast import PLAIN_TYPES, FastCheck, fast_check, suspects
from dms.engine.types import ColumnSpec, TextType

__all__ = ["Batch", "ErrorRow", "ImportPlan", "PlanError"]

NULL = "\\N"  # COPY text format's NULL
FIRST_BATCH_ROWS = 500
VALUE_CHARS = 200  # a rejected value is reported truncated to this many characters
REQUIRED = "required: the column is not null and has no default"
# COPY text format: backslash, tab, newline and carriage return must be escaped in data.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = ("\\", "\t", "\n", "\r")
_FIELDS = attrgetter("fields")
_LINE = attrgetter("line")


class ErrorRow(NamedTuple):
    """One reported problem: physical line, column (None for the whole row), value, message."""

    line: int
    column: str | None
    value: str | None
    message: str


class PlanError(Exception):
    """Raised when the file's columns no longer fit the table (it changed since the upload)."""


@dataclass(frozen=True, slots=True)
class _Field:
    index: int  # position in the CSV record
    name: str
    convert: Callable[[str], str] | None  # None: the text is stored as it is
    fast: FastCheck | None  # proves most values valid in bulk (convert runs on the rest)
    plain: bool  # valid values never hold a tab, newline, carriage return or backslash
    empty: str | None  # value for an empty cell (the default), None for NULL
    required: bool
    unique: bool


@dataclass(slots=True)
class Batch:
    """Converted rows ready for COPY, the rows' lines and unique keys, and the rejected rows."""

    data: bytes  # COPY text of the good rows, each ending in a newline
    lines: list[int]  # physical line of each good row
    keys: list[list[str | None]]  # per unique column, each good row's value (None = NULL)
    errors: list[ErrorRow]
    records: int  # records read: good + rejected
    rejected: int  # rows rejected here (a row may have several errors)
    end_offset: int  # resume point after the batch's last record
    end_line: int


class ImportPlan:
    """How the CSV fields of one job map onto a table's columns and their converters."""

    def __init__(
        self, table: TableDef, columns: list[str | None], copy_encoding: str = "utf-8"
    ) -> None:
        by_name = {c.name: c for c in table.columns}
        gone = [name for name in columns if name is not None and name not in by_name]
        if gone:
            raise PlanError(f"column(s) no longer in table {table.name!r}: {', '.join(gone)}")
        mapped = {name for name in columns if name is not None}
        missing = [c.name for c in table.columns if c.spec.required and c.name not in mapped]
        if missing:
            raise PlanError(f"required column(s) missing from the file: {', '.join(missing)}")
        self.width = len(columns)
        self.copy_encoding = copy_encoding  # the COPY connection's client encoding
        self.fields = tuple(
            _field(index, name, by_name[name].spec)
            for index, name in enumerate(columns)
            if name is not None
        )
        self.names = [f.name for f in self.fields]
        self.unique = [f.name for f in self.fields if f.unique]

    def batches(
        self,
        records: Iterable[Record],
        batch_rows: int,
        *,
        skip_header: bool,
        size_bytes: int | None = None,
    ) -> Iterator[Batch]:
        """Return an iterator of converted batches of at most `batch_rows` records.

        Batches start small (loading starts sooner) and, when the file's `size_bytes` is
        known, shrink again near its end (the last batch, loaded after the last one is read,
        is short).
        """
        records = iter(records)
        if skip_header:
            next(records, None)
        smallest = size = min(batch_rows, FIRST_BATCH_ROWS)
        while chunk := list(islice(records, size)):
            last = chunk[-1]
            size = min(batch_rows, size * 2)
            span = last.end_offset - chunk[0].end_offset
            if size_bytes is not None and size_bytes > last.end_offset and span > 0:
                # Records left, from the bytes left and this batch's mean record length (recent
                # records predict the next ones better than the file's first ones).
                left = (size_bytes - last.end_offset) * (len(chunk) - 1) / span
                size = max(min(size, int(left / 2)), smallest)
            # attrgetter and map keep the per-record work in C.
            rows: list[Any] = list(map(_FIELDS, chunk))
            lines = list(map(_LINE, chunk))
            errors: list[ErrorRow] = []
            if None in rows:  # unreadable records (ragged, undecodable…) are row errors
                for record in chunk:
                    if record.fields is None:
                        message = record.error or "unreadable row"
                        errors.append(ErrorRow(record.line, None, None, message))
                rows = [r.fields for r in chunk if r.fields is not None]
                lines = [r.line for r in chunk if r.fields is not None]
            yield self.convert(rows, lines, errors, last)

    def convert(
        self, rows: list[list[str]], lines: list[int], errors: list[ErrorRow], last: Record
    ) -> Batch:
        """Return the batch of `rows` (good records) and `errors` (unreadable ones)."""
        records = len(rows) + len(errors)
        rejected_rows = len(errors)
        bad: set[int] = set()
        columns: list[list[str]] = []
        keys: list[list[str | None]] = []
        for field in self.fields:
            column, failed = self._column(field, rows)
            for i, message in failed:
                value = rows[i][field.index][:VALUE_CHARS] or None
                errors.append(ErrorRow(lines[i], field.name, value, message))
                bad.add(i)
            if field.unique:
                keys.append(column)
            columns.append(_copy_texts(column, field.plain))
        copy_rows: Iterable[str] = (
            map("\t".join, zip(*columns, strict=True)) if columns else [""] * len(rows)
        )  # no column loaded: each row is all defaults
        if bad:
            keep = [i for i in range(len(rows)) if i not in bad]
            listed = list(copy_rows)
            copy_rows = [listed[i] for i in keep]
            lines = [lines[i] for i in keep]
            keys = [[key[i] for i in keep] for key in keys]
            rejected_rows += len(bad)
        data = ("\n".join(copy_rows) + "\n").encode(self.copy_encoding) if lines else b""
        return Batch(
            data, lines, keys, errors, records, rejected_rows, last.end_offset, last.end_line
        )

    def _column(
        self, field: _Field, rows: list[list[str]]
    ) -> tuple[list[Any], list[tuple[int, str]]]:
        """Return the field's converted values (None = NULL) and (row, message) failures."""
        values: list[Any] = list(map(itemgetter(field.index), rows))
        has_empty = "" in values
        failed: list[tuple[int, str]] = []
        convert = field.convert
        if convert is not None and field.fast is not None:
            todo = suspects(values, field.fast)
            if todo:
                failed = _convert_some(convert, values, todo)
        elif convert is not None:
            if has_empty:
                inner = convert

                def convert(text: str) -> str:
                    return inner(text) if text else text

            values, failed = _convert_all(convert, values)
        if has_empty:
            for i in _positions(values, ""):
                values[i] = field.empty
                if field.empty is None and field.required:
                    failed.append((i, REQUIRED))
        return values, failed


def _field(index: int, name: str, spec: ColumnSpec) -> _Field:
    # Text cannot fail: csvreader already turned NUL and undecodable bytes into row errors.
    convert = None if type(spec.type) is TextType else spec.type.from_csv
    empty = None
    if spec.has_default and spec.default is not None:
        empty = spec.type.from_csv(spec.type.to_text(spec.default))
    fast = None if convert is None else fast_check(spec.type)
    plain = type(spec.type) in PLAIN_TYPES
    return _Field(index, name, convert, fast, plain, empty, not spec.nullable, spec.unique)


def _convert_all(
    convert: Callable[[str], str], values: list[str]
) -> tuple[list[Any], list[tuple[int, str]]]:
    """Return map(convert, values) with None where it raised, and the (index, message) list."""
    out: list[Any] = []
    failed: list[tuple[int, str]] = []
    it = iter(values)
    while True:
        try:
            # list.extend keeps what was appended before a converter raised; `it` resumes after
            # the bad value, so the loop stays in C except for one exception per bad value.
            out.extend(map(convert, it))
            return out, failed
        except ValueError as exc:  # ConversionError and any other refusal of a value
            failed.append((len(out), str(exc) or "not a valid value"))
            out.append(None)


def _convert_some(
    convert: Callable[[str], str], values: list[Any], todo: list[int]
) -> list[tuple[int, str]]:
    """Convert values[i] in place for i in `todo` (None where it fails); return the failures."""
    failed: list[tuple[int, str]] = []
    for i in todo:
        text = values[i]
        if text:
            try:
                values[i] = convert(text)
            except ValueError as exc:
                failed.append((i, str(exc) or "not a valid value"))
                values[i] = None
    return failed


def _positions(values: list[Any], target: object) -> Iterator[int]:
    """Return the indexes of `target` in `values` (list.index scans in C)."""
    i = -1
    while True:
        try:
            i = values.index(target, i + 1)
        except ValueError:
            return
        yield i


def _copy_texts(values: list[Any], plain: bool) -> list[str]:
    """Return values as COPY text fields: escaped (unless `plain`), NULL for None."""
    present = "" if plain else "\x00".join(filter(None, values))  # no good value holds NUL
    if any(special in present for special in _SPECIAL):
        return [NULL if v is None else v.translate(_ESCAPES) for v in values]
    out = values if None not in values else values.copy()
    for i in _positions(out, None):
        out[i] = NULL
    return out
