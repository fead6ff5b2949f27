"""Where a service's memory goes, on request: tracemalloc between a start and a report, shared by
toy-redis (its TRACEMALLOC command over RESP) and the alert relay (GET /debug/allocations behind its
metrics login), which `homelab profile NODE SERVICE --memory` asks.

tracemalloc costs every allocation while it runs, so it is never on by default: start turns it on
for at most the seconds asked (it stops by itself then, in case the operator's client went away),
report compares a snapshot with the one taken at start, and stop (or the timer) turns it off and
drops the snapshots, which leaves nothing behind.

What a caller can make the service hold is bounded: one view per process (tracemalloc is global),
one frame per allocation, at most MAX_SECONDS of tracing and MAX_SITES lines in a report.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import PurePath

from pprof_sampler.endpoint import query_number

# Frames kept per allocation: sites are grouped by the allocating line, and each frame costs memory.
TRACE_FRAMES = 1
MAX_SECONDS = 3600
MAX_SITES = 100
# Sites answered when the request names no `sites`.
DEFAULT_SITES = 10
PATH = "/debug/allocations"
CONTENT_TYPE = "application/json"


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


class AllocationEndpoint:
    """GET /debug/allocations?seconds=N&sites=M: trace for N seconds, answer the M lines that grew
    most and the M holding most as JSON ``{"sites": [Site fields...]}``, and stop tracing, also when
    the caller goes away or the service stops. Like Go's /debug/pprof/heap?seconds=N, one request
    takes the whole view, so no caller can leave tracing on; a second view while one runs gets 429."""

    def __init__(self):
        self.tracing = AllocationTracing(asyncio.get_running_loop)
        self.waiting: asyncio.Future | None = None
        self.closed = False

    async def answer(self, query: str) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for a request with ``query`` (the part after `?`)."""
        seconds = query_number(query, "seconds", None, MAX_SECONDS)
        count = query_number(query, "sites", DEFAULT_SITES, MAX_SITES)
        if seconds is None or count is None:
            return 400, (f"expected seconds=1..{MAX_SECONDS} and optionally sites=1..{MAX_SITES} "
                         f"(default {DEFAULT_SITES})\n").encode(), "text/plain"
        if self.closed:
            return 503, b"the service is stopping\n", "text/plain"
        if self.tracing.running:
            return 429, b"an allocation view is being taken: retry after it\n", "text/plain"
        # Its own timer is only a backstop here: the report below comes a second before it.
        self.tracing.start(seconds + 1)
        try:
            self.waiting = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiting, seconds)
            except asyncio.TimeoutError:
                pass
            if self.closed:
                return 503, b"the service is stopping\n", "text/plain"
            # On the event loop, as toy-redis does: a snapshot of one-frame traces takes milliseconds.
            sites = self.tracing.report(count)
        finally:
            self.waiting = None
            self.tracing.stop()
        return 200, json.dumps({"sites": [asdict(site) for site in sites]}).encode(), CONTENT_TYPE

    def close(self) -> None:
        """The service stops: a view under way ends now, with tracing off."""
        self.closed = True
        self.tracing.stop()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)
