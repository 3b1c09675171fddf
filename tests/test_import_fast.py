"""Bulk checks narrow a failed block down to its bad values."""

from __future__ import annotations

import random

import pytest

from dms.engine.import_fast import BLOCK, SMALLEST, fast_check, suspects
from dms.engine.types import parse_column_spec


@pytest.mark.parametrize("bad_count", [0, 1, 3, 40])
def test_suspects_hold_every_bad_value_and_few_good_ones(bad_count):
    check = fast_check(parse_column_spec("integer").type)
    assert check is not None
    rng = random.Random(bad_count)
    values = [str(rng.randint(-999, 999)) for _ in range(5000)]
    bad = set(rng.sample(range(len(values)), bad_count))
    for i in bad:
        values[i] = rng.choice(["x", "1.5", "12345678901", "1_000", ""]) or "-"
    found = suspects(values, check)
    assert found == sorted(set(found))  # ascending, once each
    assert bad <= set(found)
    assert len(found) <= SMALLEST * bad_count < BLOCK * max(bad_count, 1)
