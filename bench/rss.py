"""Peak resident memory of a process tree, read from /proc (Linux) without starting processes.

The import's reader child lives only as long as a job, so its peak (VmHWM) has to be read
while it runs: a thread samples the tree every `interval` seconds. Reading /proc costs a few
milliseconds a sample; forking `ps` for it stole CPU from the import being measured.
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["TreePeak", "descendants", "peak_rss_mib"]


def descendants(root: int) -> list[int]:
    """Return the pids of every process below `root` (not `root` itself)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def peak_rss_mib(pids: list[int]) -> float:
    """Return the largest peak resident set (VmHWM) among `pids`, in MiB (0 if none)."""
    peak = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


class TreePeak:
    """The largest peak RSS of any process below `root`, sampled while the block runs."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        """Read the tree's peaks now."""
        self.peak_mib = max(self.peak_mib, peak_rss_mib(descendants(self.root)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
