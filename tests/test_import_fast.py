"""Bulk checks: which values they prove, and how a failed block is narrowed to its bad values."""

from __future__ import annotations

import random
import sys

import pytest

from dms.engine import import_fast
from dms.engine.import_fast import BLOCK, SMALLEST, fast_check, suspects
from dms.engine.types import parse_column_spec

INTEGER = parse_column_spec("integer").type


def integers(count: int, seed: int) -> list[str]:
    """Return `count` valid integer cells."""
    rng = random.Random(seed)
    return [str(rng.randint(-999, 999)) for _ in range(count)]


@pytest.mark.parametrize("bad_blocks", [[], [0], [3, 40, 77]])
def test_one_bad_value_in_a_block_costs_at_most_a_few_conversions(bad_blocks):
    check = fast_check(INTEGER)
    assert check is not None
    values = integers(BLOCK * 78, seed=len(bad_blocks))
    bad = {block * BLOCK + 17 * (block % 3 + 1) for block in bad_blocks}
    for i in bad:
        values[i] = "x"
    found = suspects(values, check)
    assert found == sorted(set(found))  # ascending, once each
    assert bad <= set(found)
    assert len(found) <= SMALLEST * len(bad)


def test_a_block_failing_in_both_halves_is_converted_whole():
    # Likely a column of values the check does not cover: halving further would cost more
    # regex runs than it saves conversions.
    check = fast_check(INTEGER)
    assert check is not None
    values = integers(BLOCK * 4, seed=1)
    values[BLOCK + 3] = values[BLOCK + 40] = "12345678901"
    assert suspects(values, check) == list(range(BLOCK, 2 * BLOCK))


def test_possessive_patterns_are_used_only_where_python_gets_them_right():
    assert import_fast.POSSESSIVE == (sys.version_info >= (3, 11, 5))


# Values Python 3.11.0-3.11.4 let possessive groups accept (CPython gh-106052).
PARTIAL = {
    "integer": [["-"], ["-", "1"], ["+"]],
    "bigint": [["-", "5"]],
    "numeric(10,2)": [["1."], ["-", "2.5"]],
    "double": [["."], ["-"]],
    "email": [["ba@"], ["a@b."], ["a@b.c"], ["a@b.com", "a@"], ["x@y.com", "-"]],
    "uuid": [["e06046f2-"]],
    "date": [["2024-01-"]],
    "timestamp": [["2024-01-01 10:"]],
}


# The possessive form only where this Python builds it (elsewhere it is the bug guarded against).
FORMS = [False, True] if import_fast.POSSESSIVE else [False]


@pytest.mark.parametrize("possessive", FORMS)
@pytest.mark.parametrize("spec", sorted(PARTIAL))
def test_blocks_with_a_partial_value_fail_either_way(spec, possessive):
    check = fast_check(parse_column_spec(spec).type, possessive=possessive)
    assert check is not None
    for block in PARTIAL[spec]:
        assert not check.passes(block), block


@pytest.mark.parametrize(
    ("spec", "typical"),
    [
        ("integer", ["0", "-17", "123456", "1734567890", "-1999999999"]),
        ("bigint", ["1734567890123", "1234567890123456789"]),
        ("numeric(10,2)", ["12.50", "-3", "99999999.99"]),
        ("date", ["2024-02-28", "1999-12-01"]),
        ("timestamp", ["2024-01-01 10:00:00", "2024-01-01T10:00:00.5"]),
        ("email", ["user1@example.com", "a.b+c@mail.ex-ample.org", "X_Y@EXAMPLE.COM"]),
        ("uuid", ["123e4567-e89b-12d3-a456-426614174000"]),
    ],
)
@pytest.mark.parametrize("possessive", FORMS)
def test_fast_checks_pass_typical_values_in_bulk(spec, typical, possessive):
    # The bulk path must carry ordinary files; values it does not prove still convert.
    check = fast_check(parse_column_spec(spec).type, possessive=possessive)
    assert check is not None and check.passes(typical * 30)
