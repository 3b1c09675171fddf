"""`make bench` / `python -m bench [reads|import|csv]`: every benchmark, or the ones named."""

from __future__ import annotations

import importlib
import sys

BENCHES = {"reads": "bench.reads", "import": "bench.imports", "csv": "bench.bench_csvreader"}


def main(names: list[str]) -> None:
    """Run the named benchmarks in order (all by default)."""
    for name in names or list(BENCHES):
        print(f"\n=== bench: {name} ===", flush=True)
        importlib.import_module(BENCHES[name]).main()


if __name__ == "__main__":
    main(sys.argv[1:])
