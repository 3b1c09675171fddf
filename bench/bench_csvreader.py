"""Throughput of dms.engine.csvreader.read_records against a plain csv.reader baseline.

Usage: python -m bench.bench_csvreader [rows]   (default 1,000,000 rows of 7 ASCII columns)
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable

from dms.engine.csvreader import read_records

CHUNK = 1 << 20  # the size the upload is stored in
ROWS = 1_000_000


def make_file(rows: int) -> bytes:
    """Return a 7-column ASCII CSV file of `rows` data rows plus a header."""
    lines = ["id,name,email,age,score,city,created"]
    lines.extend(
        f"{i},user{i},user{i}@example.com,{18 + i % 70},{i % 1000 / 7:.3f},"
        f"City{i % 977},2024-01-{i % 28 + 1:02d}"
        for i in range(rows)
    )
    return ("\n".join(lines) + "\n").encode("ascii")


def baseline(data: bytes) -> int:
    """Return the record count from csv.reader over a TextIOWrapper."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    return sum(1 for _ in csv.reader(text))


def csvreader(data: bytes) -> int:
    """Return the record count from read_records over 1 MiB chunks."""
    chunks = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    return sum(1 for _ in read_records(chunks, encoding="utf-8", delimiter=","))


def best_rate(fn: Callable[[bytes], int], data: bytes, runs: int = 3) -> float:
    """Return the best rows/s of a few runs."""
    best = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        count = fn(data)
        best = max(best, count / (time.perf_counter() - started))
    return best


def main(rows: int = ROWS) -> None:
    """Print rows/s for the baseline and read_records, and their ratio."""
    data = make_file(rows)
    base = best_rate(baseline, data)
    ours = best_rate(csvreader, data)
    print(f"file: {rows:,} rows, {len(data) / 2**20:.1f} MiB")
    print(f"baseline csv.reader(TextIOWrapper): {base:12,.0f} rows/s")
    print(f"dms read_records:                   {ours:12,.0f} rows/s")
    print(f"ratio: {ours / base:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS)
