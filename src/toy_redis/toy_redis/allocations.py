"""Where the server's memory goes, on request: tracemalloc between a start and a report.

tracemalloc costs every allocation while it runs, so it is never on by default: TRACEMALLOC START
turns it on for at most the seconds asked (it stops by itself then, in case the operator's client
went away), REPORT compares a snapshot with the one taken at start, and STOP (or the timer) turns
it off and drops the snapshots, which leaves nothing behind.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import PurePath

# Frames kept per allocation: sites are grouped by the allocating line, and each frame costs memory.
TRACE_FRAMES = 1
MAX_SECONDS = 3600
MAX_SITES = 100


@dataclass(frozen=True)
class Site:
    """One allocating line: bytes held now (allocated since start), growth since start, block count growth."""

    file: str
    line: int
    size: int
    growth: int
    count_growth: int

    def __str__(self) -> str:
        return f"{PurePath(self.file).name}:{self.line}"


class AllocationTracing:
    def __init__(self, loop_getter):
        self._loop_getter = loop_getter
        self._baseline: tracemalloc.Snapshot | None = None
        self._timer = None

    @property
    def running(self) -> bool:
        return self._baseline is not None

    def start(self, seconds: int) -> None:
        """Trace for at most ``seconds``; a second start restarts the window."""
        self.stop()
        tracemalloc.start(TRACE_FRAMES)
        self._baseline = tracemalloc.take_snapshot()
        self._timer = self._loop_getter().call_later(seconds, self.stop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._baseline = None
        tracemalloc.stop()  # also frees the traces

    def report(self, count: int) -> list[Site]:
        """The ``count`` sites that grew most since start, then the ``count`` holding most (no repeats)."""
        if self._baseline is None:
            raise RuntimeError("allocation tracing is off")
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snapshot.compare_to(self._baseline, "lineno")
        by_growth = sorted(stats, key=lambda stat: stat.size_diff, reverse=True)[:count]
        by_size = sorted(stats, key=lambda stat: stat.size, reverse=True)[:count]
        chosen = list(dict.fromkeys(by_growth + by_size))
        return [Site(stat.traceback[0].filename, stat.traceback[0].lineno, stat.size, stat.size_diff, stat.count_diff)
                for stat in chosen]
