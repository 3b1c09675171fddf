"""Test CSV files: valid rows with a known share of bad rows of every kind, and their lines."""

from __future__ import annotations

import random

BENCH_FIELDS = {
    "name": "text",
    "email": "email unique",
    "qty": "integer",
    "price": "numeric(10,2)",
    "active": "boolean",
    "born": "date",
    "seen": "timestamp",
}
HEADER = "name,email,qty,price,active,born,seen"


def good_row(i: int) -> str:
    """Return a valid CSV line for row `i` (unique email)."""
    return (
        f"name {i},user{i}@example.com,{i % 1000},{i % 9999}.{i % 100:02d},"
        f"{'true' if i % 2 else 'false'},2020-{1 + i % 12:02d}-{1 + i % 28:02d},"
        f"2024-01-01 10:{i % 60:02d}:00"
    )


def _replace_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


BAD_KINDS = [
    ("qty", lambda i: good_row(i).replace(f",{i % 1000},", ",notanumber,", 1)),
    (
        "born",
        lambda i: good_row(i).rsplit(",", 2)[0] + ",2023-02-30," + good_row(i).rsplit(",", 1)[1],
    ),
    ("email", lambda i: good_row(i).replace(f"user{i}@example.com", f"user{i}-at-example.com")),
    ("price", lambda i: good_row(i).replace(f",{i % 9999}.{i % 100:02d},", ",12.3.4,")),
    ("active", lambda i: good_row(i).replace(",true,", ",maybe,").replace(",false,", ",maybe,")),
    ("seen", lambda i: good_row(i).rsplit(",", 1)[0] + ",2024-01-01T10:00:00+02:00"),
    ("", lambda i: good_row(i) + ",extra"),  # ragged
    ("", lambda i: good_row(i).replace("name", "na\x00me", 1)),  # NUL byte
]


def make_csv(rows: int, bad_every: int = 100, seed: int = 7) -> tuple[bytes, set[int], int]:
    """Return (file bytes, physical lines of bad rows, number of good rows)."""
    rng = random.Random(seed)
    lines, bad_lines = [HEADER], set()
    for i in range(rows):
        if bad_every and i % bad_every == bad_every - 1:
            _, make = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
            lines.append(make(i))
            bad_lines.add(len(lines))
        else:
            lines.append(good_row(i))
    data = ("\n".join(lines) + "\n").encode()
    return data, bad_lines, rows - len(bad_lines)
