"""Decode and parse an uploaded CSV byte stream into records with line numbers and resume points.

Chunks are cut at their last newline into blocks; each block is decoded strictly in one call
and fed line by line to the C `csv` parser, so the per-line work stays in C. Byte offsets come
from a per-block table of line ends, looked up with `reader.line_num` once per record.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from operator import add, itemgetter

from dms.engine.errors import InvalidRequest

__all__ = ["CsvFormatError", "Record", "detect_format", "read_records"]

BOM = codecs.BOM_UTF8
SNIFFED_DELIMITERS = (",", ";", "\t", "|")
DEFAULT_MAX_LINE_BYTES = 32 << 20
_QUOTED = re.compile(r'"[^"]*(?:"|$)')
_FORBIDDEN_DELIMITERS = frozenset('"\r\n\x00')
# Escape-style and stateful codecs reinterpret ASCII bytes; this must decode to itself.
_ASCII_PROBE = b'\\u00e9\\x41+AGEA-~{",~}\x1b$B",\x1b(B\x1b$)C\x0e",\x0f'


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building the Record a tenth of the reader's time per row; nothing mutates one.
@dataclass(slots=True)
class Record:
    """One CSV record (or row error) with its physical line span and resume offset."""

    line: int
    fields: list[str] | None
    error: str | None
    end_offset: int
    end_line: int


class CsvFormatError(InvalidRequest):
    """Raised when the file as a whole cannot be read: empty, or an unreadable header."""


def detect_format(
    sample: bytes, *, encoding: str | None = None, delimiter: str | None = None
) -> tuple[str, str, bool]:
    """Return (encoding, delimiter, has_bom) from the file's first bytes and declared values."""
    enc = "utf-8" if encoding is None else _check_encoding(encoding)
    has_bom = enc == "utf-8" and sample.startswith(BOM)
    body = sample[len(BOM) :] if has_bom else sample
    raw = next((ln for ln in body.split(b"\n") if ln not in (b"", b"\r")), None)
    if raw is None:
        raise CsvFormatError("the file is empty")
    try:
        # final=False: the sample may end inside a multibyte character of a long header.
        header = codecs.getincrementaldecoder(enc)().decode(raw, final=False)
    except UnicodeDecodeError:
        raise CsvFormatError(
            f"the header line is not valid {enc}; declare the file's encoding"
        ) from None
    if delimiter is not None:
        return enc, _check_delimiter(delimiter), has_bom
    return enc, _sniff_delimiter(header), has_bom


def read_records(
    chunks: Iterable[bytes],
    *,
    encoding: str,
    delimiter: str,
    start_offset: int = 0,
    start_line: int = 1,
    max_field_chars: int = 131072,
    expected_fields: int | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Record]:
    """Return an iterator of the file's records from start_offset, the header first at 0."""
    # Validated eagerly (not inside the generator) so bad arguments fail at the call site.
    enc = _check_encoding(encoding)
    delim = _check_delimiter(delimiter)
    if start_offset and expected_fields is None:
        raise ValueError("expected_fields is required when resuming after the header")
    if max_field_chars > csv.field_size_limit():
        # The C limit is process-wide and bounds memory on runaway quotes; only ever raise it.
        csv.field_size_limit(max_field_chars)
    src = _Source(chunks, enc, start_offset, start_line, max_line_bytes)
    return _records(src, delim, start_offset, start_line, max_field_chars, expected_fields)


def _records(
    src: _Source,
    delimiter: str,
    start_offset: int,
    start_line: int,
    limit: int,
    expected: int | None,
) -> Iterator[Record]:
    reader = csv.reader(src.lines, delimiter=delimiter, quotechar='"', strict=True)
    bad = src.bad
    width = None if start_offset == 0 else expected  # None until the header is read
    # Physical line = shift + reader.line_num; shift grows by the lines a resync reads itself.
    shift = start_line - 1
    prev_end, prev_line = start_offset, start_line - 1
    ends, lo, hi = src.current(prev_end)
    while True:
        try:
            for fields in reader:
                line = shift + reader.line_num
                if line > hi:
                    ends, lo, hi = src.current(prev_end)
                end = ends[line - lo]
                # Byte length bounds character length, so short records skip the field scan.
                if (
                    len(fields) == width
                    and end - prev_end <= limit
                    and not (bad and bad[0][0] <= line)
                ):
                    yield Record(prev_line + 1, fields, None, end, line)
                else:
                    error = _row_error(fields, width, limit, bad, line)
                    if width is None and (fields or error):
                        if error:
                            raise CsvFormatError(f"cannot read the header: {error}")
                        width = _header_width(fields, expected)
                        yield Record(prev_line + 1, fields, None, end, line)
                    elif fields or error:
                        yield Record(prev_line + 1, None if error else fields, error, end, line)
                prev_end, prev_line = end, line
        except csv.Error as exc:
            line = shift + reader.line_num
            if line > hi:
                ends, lo, hi = src.current(prev_end)
            # The C parser restarts on the next line; if the record is still inside quotes
            # (parity of quote characters so far), the lines up to the closing quote belong to
            # it and must not be parsed as records of their own.
            odd = src.raw(prev_end, ends[line - lo]).count(b'"') & 1
            while odd:
                text = next(src.lines, None)
                if text is None:
                    break
                shift += 1
                odd ^= text.count('"') & 1
            line = shift + reader.line_num
            if line > hi:
                ends, lo, hi = src.current(prev_end)
            end = ends[line - lo]
            error = _row_error(None, None, limit, bad, line) or _parse_error(str(exc), odd, limit)
            if width is None:
                raise CsvFormatError(f"cannot read the header: {error}") from None
            yield Record(prev_line + 1, None, error, end, line)
            prev_end, prev_line = end, line
        else:
            break
    if width is None and start_offset == 0:
        raise CsvFormatError("the file is empty")


def _row_error(
    fields: list[str] | None, width: int | None, limit: int, bad: deque[tuple[int, str]], line: int
) -> str | None:
    if bad and bad[0][0] <= line:
        message = bad[0][1]
        while bad and bad[0][0] <= line:
            bad.popleft()
        return message
    if not fields:
        return None
    if max(map(len, fields)) > limit:
        return f"field longer than {limit} characters"
    if width is not None and len(fields) != width:
        return f"expected {width} fields, found {len(fields)}"
    return None


def _parse_error(message: str, unterminated: int, limit: int) -> str:
    if unterminated:
        return "quoted field not closed before the end of the file"
    if message.startswith("field larger than field limit"):
        return f"field longer than {limit} characters"
    if message.startswith("new-line character seen in unquoted field"):
        return "carriage return inside an unquoted field"
    return f"malformed quoting: {message}"


def _header_width(fields: list[str], expected: int | None) -> int:
    if expected is not None and len(fields) != expected:
        raise CsvFormatError(f"the header has {len(fields)} fields, expected {expected}")
    return len(fields)


def _check_encoding(name: str) -> str:
    """Return the codec name to decode with, or raise InvalidRequest if it is unusable."""
    try:
        canonical = codecs.lookup(name).name
    except (LookupError, TypeError, ValueError):
        raise InvalidRequest(f"unknown encoding {name!r}") from None
    if canonical in ("utf-8", "utf-8-sig"):
        return "utf-8"  # the BOM is stripped at offset 0 only, never at each block
    if not _is_single_byte_ascii(canonical):
        raise InvalidRequest(
            f"encoding {name!r} is not supported: use utf-8 or a single-byte "
            "ASCII-compatible encoding such as latin-1 or cp1252"
        )
    return canonical


def _is_single_byte_ascii(codec: str) -> bool:
    # Splitting on b"\n" and matching quotes and delimiters on bytes are only safe when ASCII
    # bytes always mean ASCII and every other byte is one character on its own.
    low, high = bytes(range(128)), bytes(range(128, 256))
    try:
        if _ASCII_PROBE.decode(codec) != _ASCII_PROBE.decode("ascii"):
            return False
        if low.decode(codec) != low.decode("ascii"):
            return False
        return all(len(h.decode(codec, "replace")) == 128 for h in (high, high[::-1]))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return False


def _check_delimiter(delimiter: str) -> str:
    if len(delimiter) != 1 or delimiter in _FORBIDDEN_DELIMITERS:
        raise InvalidRequest(
            "delimiter must be exactly one character other than a quote, a newline or NUL",
            errors={"delimiter": ["invalid delimiter"]},
        )
    return delimiter


def _sniff_delimiter(header: str) -> str:
    unquoted = _QUOTED.sub("", header)
    best = max(SNIFFED_DELIMITERS, key=unquoted.count)  # ties go to the earlier candidate
    return best if unquoted.count(best) else ","


def _strip_bom(chunks: Iterable[bytes]) -> tuple[Iterator[bytes], int]:
    it = iter(chunks)
    head = b""
    for chunk in it:
        head += chunk  # chunks can be smaller than the BOM itself
        if len(head) >= len(BOM):
            break
    if head.startswith(BOM):
        return chain((head[len(BOM) :],), it), len(BOM)
    return chain((head,), it), 0


def _note_nuls(text: str, first: int, marks: list[tuple[int, str]]) -> None:
    """Mark each line of decoded `text` (line `first` on) that holds a NUL character."""
    line, counted, at = first, 0, text.find("\x00")
    while at >= 0:
        line += text.count("\n", counted, at)
        marks.append((line, f"NUL character at line {line}"))
        counted = text.find("\n", at)
        if counted < 0:
            return
        line += 1
        counted += 1
        at = text.find("\x00", counted)


class _Source:
    """Decoded physical lines of a byte stream plus the line-end offsets of the current block."""

    def __init__(
        self, chunks: Iterable[bytes], encoding: str, offset: int, line: int, cap: int
    ) -> None:
        if offset == 0 and encoding == "utf-8":
            chunks, offset = _strip_bom(chunks)
        self.encoding = encoding
        self.cap = cap
        self.bad: deque[tuple[int, str]] = deque()  # (line, message), ascending
        self.kept: deque[tuple[int, bytes]] = deque()  # (base offset, bytes) per block
        self.ends = [offset]  # ends[i] = byte offset just after physical line lo + i
        self.lo = line - 1
        self.lines: Iterator[str] = chain.from_iterable(self._blocks(iter(chunks), offset, line))

    def current(self, start: int) -> tuple[list[int], int, int]:
        """Return (ends, lo, hi) of the block holding the parser's last line; drop old blocks."""
        kept = self.kept
        while len(kept) > 1 and kept[1][0] <= start:
            kept.popleft()
        return self.ends, self.lo, self.lo + len(self.ends) - 1

    def raw(self, start: int, end: int) -> bytes:
        """Return the kept bytes between two offsets (approximate for over-long lines)."""
        kept = self.kept
        return b"".join(
            data[max(start - base, 0) : end - base] for base, data in kept if base < end
        )

    def _blocks(self, chunks: Iterator[bytes], pos: int, line: int) -> Iterator[Iterator[str]]:
        cap = self.cap
        parts: list[bytes] = []
        size = 0  # length of the pending partial line
        dropped_quotes = 0  # quotes in the part of an over-long pending line not kept
        for chunk in chunks:
            nl = chunk.find(b"\n")
            if nl < 0:
                if size <= cap:
                    parts.append(chunk)
                else:
                    dropped_quotes += chunk.count(b'"')
                size += len(chunk)
                continue
            if size + nl > cap:
                # Memory stays flat: an over-long line is replaced by a stand-in that keeps
                # only its length and the parity of its quotes (so quoting stays in step).
                quotes = (
                    dropped_quotes + chunk.count(b'"', 0, nl) + sum(p.count(b'"') for p in parts)
                )
                yield self._long_line(quotes, pos, line, pos + size + nl + 1)
                pos, line = self.ends[-1], line + 1
                chunk, parts, size, dropped_quotes = chunk[nl + 1 :], [], 0, 0
            cut = chunk.rfind(b"\n") + 1
            if cut:
                parts.append(chunk[:cut] if cut < len(chunk) else chunk)
                yield self._block(b"".join(parts) if len(parts) > 1 else parts[0], pos, line)
                pos, line = self.ends[-1], self.lo + len(self.ends)
                parts = [chunk[cut:]] if cut < len(chunk) else []
                size = len(chunk) - cut
            elif chunk:
                parts, size = [chunk], len(chunk)
        if size > cap:
            quotes = dropped_quotes + sum(p.count(b'"') for p in parts)
            yield self._long_line(quotes, pos, line, pos + size)
        elif size:
            yield self._block(b"".join(parts), pos, line)

    def _long_line(self, quotes: int, base: int, line: int, end: int) -> Iterator[str]:
        stand_in = b'"' * (quotes & 1)
        self.ends, self.lo = [base, end], line - 1
        self.kept.append((base, stand_in + b"\n"))
        return iter(self._checked([stand_in], b"", line, long_lines=True))

    def _block(self, data: bytes, base: int, first: int) -> Iterator[str]:
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when data ends with a newline, else the unterminated last line
        ends = list(accumulate(map(add, map(len, lines), repeat(1)), initial=base))
        if tail:
            ends.append(ends[-1] + len(tail))
        self.ends, self.lo = ends, first - 1
        self.kept.append((base, data))
        if len(data) > self.cap:
            return iter(self._checked(lines, tail, first))
        # The whole block is decoded and scanned in C; only lines with undecodable bytes or a
        # NUL become row errors (in `bad`, by line), and the block reads as usual around them.
        marks: list[tuple[int, str]] = []
        text = self._decode(data, first, marks)
        if "\x00" in text:
            _note_nuls(text, first, marks)
        self.bad.extend(sorted(marks, key=itemgetter(0)))  # stable: a line's first problem first
        # newline="\n": split on \n only, keep \r\n intact and a lone \r as data.
        return io.StringIO(text, newline="\n")

    def _decode(self, data: bytes, first: int, marks: list[tuple[int, str]]) -> str:
        """Return `data` decoded; a line with undecodable bytes is marked and kept replaced."""
        enc, pieces, start, line = self.encoding, [], 0, first
        while True:
            try:
                pieces.append(data[start:].decode(enc))
                return "".join(pieces)
            except UnicodeDecodeError as exc:
                wrong = start + exc.start
            begin = data.rfind(b"\n", start, wrong) + 1 or start
            end = data.find(b"\n", wrong)
            end = len(data) if end < 0 else end
            pieces.append(data[start:begin].decode(enc))  # whole lines before it: valid
            line += data.count(b"\n", start, begin)
            marks.append((line, f"invalid {enc} byte(s) at line {line}"))
            pieces.append(data[begin:end].decode(enc, "replace"))  # quotes, delimiters kept
            start = end  # the newline, if any, starts the rest

    def _checked(
        self, lines: list[bytes], tail: bytes, first: int, long_lines: bool = False
    ) -> list[str]:
        """Return the lines decoded one by one, recording each problem line in `bad`."""
        enc, cap, bad = self.encoding, self.cap, self.bad
        out = []
        for n, raw in enumerate([*lines, tail] if tail else lines, first):
            if long_lines or len(raw) > cap:
                bad.append((n, f"line {n} is longer than {cap} bytes"))
                text = '"' * (raw.count(b'"') & 1)
            else:
                try:
                    text = raw.decode(enc)
                except UnicodeDecodeError:
                    bad.append((n, f"invalid {enc} byte(s) at line {n}"))
                    text = raw.decode(enc, "replace")  # keeps quotes and delimiters in place
                if "\x00" in text:
                    bad.append((n, f"NUL character at line {n}"))
            out.append(text + "\n")
        if tail:
            out[-1] = out[-1][:-1]
        return out
