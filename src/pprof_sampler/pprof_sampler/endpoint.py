"""GET /debug/pprof/profile?seconds=N, as Go's net/http/pprof serves it and Grafana Alloy's
`pyroscope.scrape` (profile.process_cpu) asks for it: a gzipped pprof CPU profile of the last N
seconds, here answered at once from the Sampler's window instead of recording N seconds more.

What a caller can make the service hold is bounded: N is at most WINDOW_S (the sampler keeps no
more), and one profile is built at a time, in a thread of its own so the event loop keeps serving;
a request while one is being built is told to retry. The services put it behind the login their
/metrics asks for and refuse to switch the sampler on without one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

from pprof_sampler.sampler import WINDOW_S, Sampler

PATH = "/debug/pprof/profile"
# Go's default when the query names no seconds.
DEFAULT_SECONDS = 30
CONTENT_TYPE = "application/octet-stream"
# The query string: a few short parameters at most.
MAX_QUERY_FIELDS = 8


class ProfileEndpoint:
    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.building = False
        self.builder = ThreadPoolExecutor(1, thread_name_prefix="pprof-build")

    async def answer(self, query: str) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for a request with ``query`` (the part after `?`)."""
        seconds = requested_seconds(query)
        if seconds is None:
            return 400, f"seconds: expected a whole number from 1 to {WINDOW_S}\n".encode(), "text/plain"
        if self.building:
            return 429, b"a profile is being built: retry in a second\n", "text/plain"
        self.building = True
        built = asyncio.get_running_loop().run_in_executor(self.builder, self.sampler.profile, seconds)
        # Free again when the build ends, also if the caller left meanwhile (its task cancelled).
        built.add_done_callback(lambda _: setattr(self, "building", False))
        return 200, await asyncio.shield(built), CONTENT_TYPE

    def close(self) -> None:
        self.builder.shutdown(wait=False, cancel_futures=True)


def requested_seconds(query: str) -> int | None:
    """The query's `seconds` (DEFAULT_SECONDS if absent), or None if it is not 1..WINDOW_S."""
    return query_number(query, "seconds", DEFAULT_SECONDS, WINDOW_S)


def query_number(query: str, name: str, default: int | None, largest: int) -> int | None:
    """The query's whole number ``name`` (``default`` if absent), or None if it is not 1..largest."""
    try:
        fields = parse_qs(query, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        return None
    given = fields.get(name, [] if default is None else [str(default)])
    if len(given) != 1 or not given[0].isascii() or not given[0].isdigit() or len(given[0]) > len(str(largest)):
        return None
    number = int(given[0])
    return number if 1 <= number <= largest else None
