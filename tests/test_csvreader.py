"""Tests for the decode + parse stage of the import: dms.engine.csvreader."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import pytest

from dms.engine.csvreader import (
    BOM,
    CsvFormatError,
    Record,
    detect_format,
    read_records,
)
from dms.engine.errors import InvalidRequest


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """Yield data in pieces of `size` bytes, like the stored upload chunks."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def iter_from(data: bytes, offset: int, size: int = 64) -> Iterator[bytes]:
    """Yield the chunks of data from a byte offset on, as the worker does when resuming."""
    return chunked(data[offset:], size)


def read(data: bytes, size: int | None = None, /, **options: Any) -> list[Record]:
    """Return every record of data read in chunks of `size` bytes (one chunk by default)."""
    options.setdefault("encoding", "utf-8")
    options.setdefault("delimiter", ",")
    return list(read_records(chunked(data, size or max(len(data), 1)), **options))


def rows(records: list[Record]) -> list[tuple[int, list[str] | None, str | None]]:
    """Return (line, fields, error) of each record."""
    return [(r.line, r.fields, r.error) for r in records]


def errors(records: list[Record]) -> dict[int, str]:
    """Return line -> error of the row errors."""
    return {r.line: r.error for r in records if r.error is not None}


# A file with most of what goes wrong in real uploads, CRLF and LF mixed.
TRICKY = (
    BOM
    + b"id,name,note\r\n"
    + b'1,Ana,"multi\r\nline, with comma"\r\n'
    + b"2,Jos\xc3\xa9,caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n"
    + b"\n"
    + b"\r\n"
    + b"3,bad \xff byte,x\n"
    + b'4,"quote ""inside""",y\n'
    + b"5,too,many,fields\n"
    + b"6,too few\n"
    + b'7,"bad"quote,z\n'
    + b"8,nul\x00here,z\n"
    + b'9,"bad utf8 \xc3 in\nmultiline",z\n'
    + b"10,"
    + b"L" * 30
    + b",long field\n"
    + b'11,"'
    + b"m" * 15
    + b"\n"
    + b"m" * 15
    + b'",long multi-line field\n'
    + b"12,lone\rcr,z\n"
    + b'13,"cr\rin quotes",z\n'
    + b'14,"bad"x,"then\nmore\nlines",z\n'
    + b'15,"",\n'
    + b'16,"never closed,\n17,a,b\n'
)
TRICKY_OPTIONS: dict[str, Any] = {"max_field_chars": 24}

# Over-long physical lines need a tiny line cap to test; kept apart so TRICKY uses the default.
LONG_LINES = (
    b"a,b\n"
    + b"1,"
    + b"x" * 70
    + b"\n"
    + b'2,"'
    + b"y" * 70
    + b'\nstill quoted",z\n'
    + b"3,ok\n"
    + b"z" * 90
)
LONG_LINES_OPTIONS: dict[str, Any] = {"max_line_bytes": 50}

FILES = [
    pytest.param(TRICKY, TRICKY_OPTIONS, id="tricky"),
    pytest.param(LONG_LINES, LONG_LINES_OPTIONS, id="long-lines"),
]


def test_header_and_rows_come_back_with_line_numbers_and_offsets() -> None:
    data = b"a,b,c\n1,2,3\nx,y,z\n"
    records = read(data)
    assert records == [
        Record(1, ["a", "b", "c"], None, 6, 1),
        Record(2, ["1", "2", "3"], None, 12, 2),
        Record(3, ["x", "y", "z"], None, 18, 3),
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'h,v\n1,"a\nb"\n2,c\n', [(1, 1), (2, 3), (4, 4)]),
        (b'h,v\n1,"a\n\nb"\n2,c\n', [(1, 1), (2, 4), (5, 5)]),
        (b'h,v\r\n1,"a\r\nb\r\nc"\r\n2,c\r\n', [(1, 1), (2, 4), (5, 5)]),
        (b'h,v\n"x\ny","a\nb"\n2,c\n', [(1, 1), (2, 4), (5, 5)]),
        (b'"h\n1","v"\n2,c\n', [(1, 2), (3, 3)]),
    ],
)
def test_quoted_newlines_make_a_record_span_lines(
    data: bytes, expected: list[tuple[int, int]]
) -> None:
    records = read(data)
    assert [(r.line, r.end_line) for r in records] == expected
    assert all(r.error is None for r in records)


def test_quoted_newlines_are_kept_in_the_field() -> None:
    assert read(b'h,v\n1,"a\r\nb\nc"\n')[1].fields == ["1", "a\r\nb\nc"]


@pytest.mark.parametrize("data", [b"a,b\n1,2\n3,4\n", b"a,b\r\n1,2\r\n3,4\r\n", b"a,b\r\n1,2\n3,4"])
def test_crlf_and_lf_line_ends_give_the_same_records(data: bytes) -> None:
    records = read(data)
    assert rows(records) == [(1, ["a", "b"], None), (2, ["1", "2"], None), (3, ["3", "4"], None)]
    assert records[-1].end_offset == len(data)


def test_a_utf8_bom_is_stripped_and_counted_in_offsets() -> None:
    data = BOM + b"id,name\n1,x\n"
    records = read(data)
    assert records[0].fields == ["id", "name"]
    assert records[0].end_offset == 3 + len(b"id,name\n")
    assert records[1].end_offset == len(data)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_a_bom_split_across_chunks_is_stripped(size: int) -> None:
    assert read(BOM + b"id\n1\n", size)[0].fields == ["id"]


def test_a_bom_is_data_in_a_single_byte_encoding() -> None:
    assert read(BOM + b"id\n1\n", encoding="latin-1")[0].fields == ["\xef\xbb\xbfid"]


@pytest.mark.parametrize("encoding", ["latin-1", "iso-8859-1", "cp1252", "iso-8859-15"])
def test_a_declared_single_byte_encoding_decodes_accents(encoding: str) -> None:
    data = "nom,ville\nRené,Orléans\n".encode(encoding)
    records = read(data, encoding=encoding)
    assert records[1].fields == ["René", "Orléans"]
    assert records[1].end_offset == len(data)


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc3(", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe9"],
)
def test_invalid_utf8_makes_only_its_record_an_error(bad: bytes) -> None:
    data = b"a,b\n1,ok\n2,x" + bad + b"y\n3,ok\n"
    assert rows(read(data)) == [
        (1, ["a", "b"], None),
        (2, ["1", "ok"], None),
        (3, None, "invalid utf-8 byte(s) at line 3"),
        (4, ["3", "ok"], None),
    ]


def test_invalid_bytes_inside_a_multi_line_record_fail_the_whole_record() -> None:
    data = b'a,b\n1,"one\ntw\xffo\nthree"\n2,ok\n'
    assert rows(read(data)) == [
        (1, ["a", "b"], None),
        (2, None, "invalid utf-8 byte(s) at line 3"),
        (5, ["2", "ok"], None),
    ]


def test_bytes_invalid_in_cp1252_are_row_errors() -> None:
    data = b"a,b\n1,\x81\n2,\x80\n"
    assert rows(read(data, encoding="cp1252"))[1:] == [
        (2, None, "invalid cp1252 byte(s) at line 2"),
        (3, ["2", "€"], None),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"1,2,3,4", "expected 3 fields, found 4"),
        (b"1,2", "expected 3 fields, found 2"),
        (b"1", "expected 3 fields, found 1"),
        (b" ", "expected 3 fields, found 1"),
        (b",,,", "expected 3 fields, found 4"),
    ],
)
def test_ragged_rows_are_row_errors(line: bytes, message: str) -> None:
    records = read(b"a,b,c\n" + line + b"\n1,2,3\n")
    assert rows(records)[1:] == [(2, None, message), (3, ["1", "2", "3"], None)]


def test_expected_fields_sets_the_width_when_resuming() -> None:
    data = b"1,2\n1,2,3\n"
    records = read(data, start_offset=10, start_line=5, expected_fields=3)
    assert rows(records) == [(5, None, "expected 3 fields, found 2"), (6, ["1", "2", "3"], None)]
    assert records[-1].end_offset == 10 + len(data)


@pytest.mark.parametrize("row", [b"1,a\x00b", b'1,"a\x00b"', b"\x00,1", b'1,"x\n\x00"'])
def test_a_nul_character_is_a_row_error(row: bytes) -> None:
    records = read(b"a,b\n" + row + b"\n2,ok\n")
    assert records[1].fields is None
    assert records[1].error is not None and records[1].error.startswith("NUL character at line")
    assert (records[2].line, records[2].fields) == (records[1].end_line + 1, ["2", "ok"])


@pytest.mark.parametrize("size", [None, 7, 64])
def test_nul_characters_make_exactly_their_own_lines_row_errors(size: int | None) -> None:
    lines = [b"a,b"]
    for i in range(2, 40):
        if i % 7 == 0:
            lines.append(b"\x00,\x00" if i % 2 else b"x\x00y,1")  # two NULs, or one, per line
        else:
            lines.append(b"%d,ok" % i)
    lines.append(b"last\x00,1")  # no newline after the last line
    records = read(b"\n".join(lines), size)
    nul_lines = [n for n, line in enumerate(lines, 1) if b"\x00" in line]
    assert [r.line for r in records if r.error] == nul_lines
    assert all(r.error == f"NUL character at line {r.line}" for r in records if r.error)
    assert [r.line for r in records[1:] if r.fields] == [
        n for n in range(2, len(lines) + 1) if n not in nul_lines
    ]


@pytest.mark.parametrize("size", [None, 5, 64])
def test_undecodable_and_nul_lines_are_exactly_their_own_row_errors(size: int | None) -> None:
    lines = [b"a,b"]
    expected = {}
    for i in range(2, 60):
        if i % 5 == 0:
            lines.append(b"caf\xe9,\xff" if i % 2 else b"\xff\xfe,1")
            expected[i] = f"invalid utf-8 byte(s) at line {i}"
        elif i % 7 == 0:
            lines.append(b"x\x00,\x00")
            expected[i] = f"NUL character at line {i}"
        elif i == 33:
            lines.append(b"\xff\x00,1")  # both: the undecodable bytes are named
            expected[i] = f"invalid utf-8 byte(s) at line {i}"
        else:
            lines.append(b"%d,ok" % i)
    lines.append(b"last,\xc3")  # a truncated character at the very end, no newline
    expected[len(lines)] = f"invalid utf-8 byte(s) at line {len(lines)}"
    records = read(b"\n".join(lines), size)
    assert {r.line: r.error for r in records if r.error} == expected
    assert [r.line for r in records[1:] if r.fields] == [
        n for n in range(2, len(lines) + 1) if n not in expected
    ]


@pytest.mark.parametrize(
    ("field", "end_line"),
    [
        (b"x" * 11, 2),
        (b'"' + b"x" * 11 + b'"', 2),
        (b'"' + b"x" * 9 + b'""x"', 2),
        (b'"xxxxxx\nxxxxxx"', 3),
        (b'"x\nx\nx\nxxxxxxxxxxx"', 5),
    ],
)
def test_a_field_over_max_field_chars_is_a_row_error(field: bytes, end_line: int) -> None:
    data = b"a,b\n1," + field + b"\n2,ok\n"
    records = read(data, max_field_chars=10)
    assert (records[1].line, records[1].end_line, records[1].error) == (
        2,
        end_line,
        "field longer than 10 characters",
    )
    assert rows(records)[2] == (end_line + 1, ["2", "ok"], None)


def test_a_field_of_exactly_max_field_chars_is_fine() -> None:
    assert read(b"a\n" + b"x" * 10 + b"\n", max_field_chars=10)[1].fields == ["x" * 10]


@pytest.mark.parametrize(
    "field",
    [
        b"u" * 140_000,
        b'"' + b"q" * 140_000 + b'"',
        b'"' + b"q" * 100_000 + b"\n" + b"q" * 100_000 + b'"',
        b'"' + b"q" * 100_000 + b"\n" + b"q" * 100_000 + b'\nend, with ""comma"""',
    ],
)
@pytest.mark.parametrize("size", [1 << 20, 4096])
def test_a_field_over_the_csv_module_limit_resyncs_at_the_next_record(
    field: bytes, size: int
) -> None:
    data = b"a,b\n1," + field + b"\n2,ok\n3,ok\n"
    records = read(data, size)
    last_line = 2 + field.count(b"\n")
    assert rows(records) == [
        (1, ["a", "b"], None),
        (2, None, "field longer than 131072 characters"),
        (last_line + 1, ["2", "ok"], None),
        (last_line + 2, ["3", "ok"], None),
    ]
    assert records[1].end_line == last_line


def test_max_field_chars_above_the_csv_module_limit_is_honoured() -> None:
    field = "w" * 200_000
    records = read(f"a,b\n1,{field}\n".encode(), max_field_chars=300_000)
    assert records[1].fields == ["1", field]
    assert csv.field_size_limit() >= 300_000


@pytest.mark.parametrize(
    ("data", "bad_lines", "next_line"),
    [
        (b'a,b\n1,"b"c\n2,ok\n', (2, 2), 3),
        (b'a,b\n"1"x,c\n2,ok\n', (2, 2), 3),
        (b'a,b\n1,"b" \n2,ok\n', (2, 2), 3),
        (b'a,b,c\n1,"b"c,"d\ne",f\n2,ok,x\n', (2, 3), 4),
    ],
)
def test_malformed_quoting_is_a_row_error_and_parsing_continues(
    data: bytes, bad_lines: tuple[int, int], next_line: int
) -> None:
    records = read(data)
    bad = records[1]
    assert (bad.line, bad.end_line, bad.fields) == (*bad_lines, None)
    assert bad.error is not None and bad.error.startswith("malformed quoting")
    assert records[2].line == next_line and records[2].error is None


def test_a_lone_carriage_return_is_data_in_quotes_and_an_error_outside() -> None:
    records = read(b'a,b\n1,"x\ry"\n2,x\ry\n3,ok\n')
    assert rows(records)[1:] == [
        (2, ["1", "x\ry"], None),
        (3, None, "carriage return inside an unquoted field"),
        (4, ["3", "ok"], None),
    ]


@pytest.mark.parametrize(
    "tail",
    [b'2,"open\n3,x\n4,y\n', b'2,"open', b'2,"open\n', b'2,"' + b"z\n" * 70_000],
)
def test_an_unterminated_quote_is_one_error_for_the_rest_of_the_file(tail: bytes) -> None:
    data = b"a,b\n1,ok\n" + tail
    records = read(data)
    assert rows(records)[1:] == [
        (2, ["1", "ok"], None),
        (3, None, "quoted field not closed before the end of the file"),
    ]
    assert records[-1].end_offset == len(data)
    assert records[-1].end_line == 2 + tail.count(b"\n") + (not tail.endswith(b"\n"))


@pytest.mark.parametrize(
    "data",
    [
        b"a,b\n\n1,2\n\n\n3,4\n\n",
        b"\n\na,b\r\n\r\n1,2\n\r\n\n3,4\r\n",
    ],
)
def test_blank_lines_are_skipped_but_counted(data: bytes) -> None:
    records = read(data)
    assert [r.fields for r in records] == [["a", "b"], ["1", "2"], ["3", "4"]]
    lines = data.split(b"\n")
    for r in records:
        assert lines[r.line - 1].rstrip(b"\r") == b",".join(f.encode() for f in r.fields or [])


def test_a_file_without_a_final_newline_ends_at_its_last_byte() -> None:
    data = b"a,b\n1,2"
    assert read(data)[-1] == Record(2, ["1", "2"], None, len(data), 2)


def test_a_line_over_max_line_bytes_is_a_row_error() -> None:
    records = read(LONG_LINES, 7, **LONG_LINES_OPTIONS)
    assert rows(records) == [
        (1, ["a", "b"], None),
        (2, None, "line 2 is longer than 50 bytes"),
        (3, None, "line 3 is longer than 50 bytes"),
        (5, ["3", "ok"], None),
        (6, None, "line 6 is longer than 50 bytes"),
    ]
    assert records[2].end_line == 4
    assert records[-1].end_offset == len(LONG_LINES)


def test_records_are_streamed_without_reading_the_whole_file() -> None:
    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        yield b"a,b\n"
        for i in range(1000):
            pulled += 1
            yield f"{i},x\n".encode() * 100

    records = read_records(chunks(), encoding="utf-8", delimiter=",")
    for _ in range(150):
        next(records)
    assert pulled <= 3


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\r\n\n\r\n", BOM, BOM + b"\n"],
)
def test_an_empty_file_is_a_format_error(data: bytes) -> None:
    with pytest.raises(CsvFormatError, match="empty"):
        read(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"id,n\xffame\n1,2\n", "invalid utf-8"),
        (b'id,"name\n1,2\n', "not closed"),
        (b'id,"na"me\n1,2\n', "malformed quoting"),
        (b"id,na\x00me\n1,2\n", "NUL"),
        (b"id,nameeeeeeeeeeeee\n1,2\n", "field longer"),
    ],
)
def test_an_unreadable_header_is_a_format_error(data: bytes, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        read(data, max_field_chars=12)


def test_a_header_of_the_wrong_width_is_a_format_error() -> None:
    with pytest.raises(CsvFormatError, match="2 fields, expected 3"):
        read(b"a,b\n1,2\n", expected_fields=3)


def test_blank_and_duplicate_header_names_are_returned_as_they_are() -> None:
    assert read(b"a,,a\n1,2,3\n")[0].fields == ["a", "", "a"]


def test_format_error_is_an_invalid_request() -> None:
    assert issubclass(CsvFormatError, InvalidRequest)
    assert CsvFormatError("x").code == "invalid_request"


def test_resuming_without_expected_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="expected_fields"):
        read_records([b"1,2\n"], encoding="utf-8", delimiter=",", start_offset=4)


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (b"a,b,c", ","),
        (b"a;b;c", ";"),
        (b"a\tb\tc", "\t"),
        (b"a|b|c", "|"),
        (b"name", ","),
        (b'"a;b",c', ","),
        (b'"x,y";"z,w";v', ";"),
        (b"a;b,c;d", ";"),
        (b"a,b;c|d", ","),
        (b"a b c", ","),
    ],
)
def test_the_delimiter_is_sniffed_from_the_header(header: bytes, delimiter: str) -> None:
    assert detect_format(header + b"\r\n1,2\n") == ("utf-8", delimiter, False)


def test_sniffing_uses_the_first_non_blank_line() -> None:
    assert detect_format(b"\n\r\na;b\nc,d,e,f\n")[1] == ";"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|", " ", ":", "§"])
def test_a_declared_delimiter_is_used(delimiter: str) -> None:
    assert detect_format(b"a,b;c\n", delimiter=delimiter)[1] == delimiter
    data = f"a{delimiter}b\n1{delimiter}2\n".encode()
    assert read(data, delimiter=delimiter)[1].fields == ["1", "2"]


@pytest.mark.parametrize("delimiter", ["", ",;", '"', "\n", "\r", "\x00", "\\t", "tab"])
def test_a_bad_declared_delimiter_is_rejected(delimiter: str) -> None:
    with pytest.raises(InvalidRequest, match="delimiter"):
        detect_format(b"a,b\n", delimiter=delimiter)
    with pytest.raises(InvalidRequest, match="delimiter"):
        read_records([b"a,b\n"], encoding="utf-8", delimiter=delimiter)


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("utf-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("utf-8-sig", "utf-8"),
        ("latin-1", "iso8859-1"),
        ("ISO-8859-1", "iso8859-1"),
        ("iso-8859-15", "iso8859-15"),
        ("cp1252", "cp1252"),
        ("windows-1252", "cp1252"),
        ("ascii", "ascii"),
        ("koi8-r", "koi8-r"),
    ],
)
def test_ascii_compatible_encodings_are_accepted(declared: str, codec: str) -> None:
    assert detect_format(b"a,b\n", encoding=declared) == (codec, ",", False)


@pytest.mark.parametrize(
    "declared",
    [
        "utf-16",
        "utf-16-le",
        "utf-32",
        "utf-7",
        "shift_jis",
        "gb18030",
        "big5",
        "euc-jp",
        "iso2022_jp",
        "hz",
        "cp037",
        "raw_unicode_escape",
        "unicode_escape",
        "idna",
        "punycode",
        "rot13",
        "hex",
        "no-such-codec",
        "",
    ],
)
def test_unsupported_encodings_are_rejected(declared: str) -> None:
    with pytest.raises(InvalidRequest, match="encoding"):
        detect_format(b"a,b\n", encoding=declared)
    with pytest.raises(InvalidRequest, match="encoding"):
        read_records([b"a,b\n"], encoding=declared, delimiter=",")


def test_a_bom_is_detected_for_utf8() -> None:
    assert detect_format(BOM + b"a;b\n") == ("utf-8", ";", True)
    assert detect_format(BOM + b"a;b\n", encoding="utf-8-sig") == ("utf-8", ";", True)
    assert detect_format(BOM + b"a,b\n", encoding="cp1252")[2] is False


@pytest.mark.parametrize("sample", [b"", b"\n\n", b"\r\n", BOM, BOM + b"\r\n"])
def test_detect_format_refuses_an_empty_file(sample: bytes) -> None:
    with pytest.raises(CsvFormatError, match="empty"):
        detect_format(sample)


@pytest.mark.parametrize(
    ("sample", "encoding"),
    [(b"n\xe9m,b\n", None), (b"a,\xff\n", None), (b"caf\xc3\xa9\n", "ascii")],
)
def test_detect_format_refuses_an_undecodable_header(sample: bytes, encoding: str | None) -> None:
    with pytest.raises(CsvFormatError, match="header line is not valid"):
        detect_format(sample, encoding=encoding)


def test_detect_format_accepts_a_sample_cut_inside_a_character() -> None:
    assert detect_format("id;café".encode()[:-1]) == ("utf-8", ";", False)


def test_tricky_file_reads_as_expected() -> None:
    records = read(TRICKY, **TRICKY_OPTIONS)
    assert rows(records)[:3] == [
        (1, ["id", "name", "note"], None),
        (2, ["1", "Ana", "multi\r\nline, with comma"], None),
        (4, ["2", "José", "café € \U0001f600"], None),
    ]
    assert records[4].fields == ["4", 'quote "inside"', "y"]
    assert errors(records) == {
        7: "invalid utf-8 byte(s) at line 7",
        9: "expected 3 fields, found 4",
        10: "expected 3 fields, found 2",
        11: "malformed quoting: ',' expected after '\"'",
        12: "NUL character at line 12",
        13: "invalid utf-8 byte(s) at line 13",
        15: "field longer than 24 characters",
        16: "field longer than 24 characters",
        18: "carriage return inside an unquoted field",
        20: "malformed quoting: ',' expected after '\"'",
        24: "quoted field not closed before the end of the file",
    }
    assert [(r.line, r.end_line) for r in records if r.fields] == [
        (1, 1),
        (2, 3),
        (4, 4),
        (8, 8),
        (19, 19),
        (23, 23),
    ]
    assert records[-1].end_line == 25 and records[-1].end_offset == len(TRICKY)


@pytest.mark.parametrize(("data", "options"), FILES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_chunk_boundaries_do_not_change_the_records(
    data: bytes, options: dict[str, Any], size: int
) -> None:
    assert read(data, size, **options) == read(data, **options)


@pytest.mark.parametrize(("data", "options"), FILES)
def test_end_offsets_fall_just_after_a_newline(data: bytes, options: dict[str, Any]) -> None:
    records = read(data, **options)
    for r in records[:-1]:
        assert data[r.end_offset - 1 : r.end_offset] == b"\n"
        assert data[: r.end_offset].count(b"\n") == r.end_line
    assert records[-1].end_offset == len(data)


@pytest.mark.parametrize(("data", "options"), FILES)
@pytest.mark.parametrize("size", [1, 5, 64])
def test_resuming_at_every_record_boundary_gives_the_remaining_records(
    data: bytes, options: dict[str, Any], size: int
) -> None:
    full = read(data, **options)
    width = len(full[0].fields or [])
    for i, r in enumerate(full):
        resumed = read_records(
            iter_from(data, r.end_offset, size),
            encoding="utf-8",
            delimiter=",",
            start_offset=r.end_offset,
            start_line=r.end_line + 1,
            expected_fields=width,
            **options,
        )
        assert list(resumed) == full[i + 1 :], f"resuming after line {r.end_line}"
