"""The endpoint's bounds, in-process: one profile is built at a time (a second caller is told to
retry, and the slot frees when the build ends, also if its caller left), and what the sampler keeps
is bounded by its window, whatever runs."""

from __future__ import annotations

import asyncio
import threading
import time

from pprof_sampler import WINDOW_S, ProfileEndpoint, Sampler
from pprof_sampler.endpoint import DEFAULT_SECONDS, requested_seconds

from .profiles import cpu_ns_by_leaf, parse


class HeldSampler(Sampler):
    """A real sampler whose profile build waits until the test lets it go (a slow build)."""

    def __init__(self):
        super().__init__(10)
        self.go = threading.Event()

    def profile(self, seconds: int) -> bytes:
        self.go.wait(10)
        return super().profile(seconds)


def test_one_profile_is_built_at_a_time():
    async def scenario():
        endpoint = ProfileEndpoint(HeldSampler().start())
        try:
            first = asyncio.ensure_future(endpoint.answer("seconds=1"))
            await asyncio.sleep(0.1)
            assert (await endpoint.answer("seconds=1"))[0] == 429
            first.cancel()  # the caller left: the build still holds the slot until it ends
            assert (await endpoint.answer("seconds=1"))[0] == 429
            endpoint.sampler.go.set()
            for _ in range(100):
                if not endpoint.building:
                    break
                await asyncio.sleep(0.05)
            status, body, _ = await endpoint.answer("seconds=1")
            assert status == 200 and parse(body).period == 100_000_000
        finally:
            endpoint.sampler.go.set()
            endpoint.sampler.stop()
            endpoint.close()

    asyncio.run(scenario())


def test_the_query_takes_go_s_default_and_nothing_past_the_window():
    assert requested_seconds("") == DEFAULT_SECONDS
    assert requested_seconds(f"seconds={WINDOW_S}") == WINDOW_S
    for query in ("seconds=0", f"seconds={WINDOW_S + 1}", "seconds=1&seconds=2", "seconds=%EF%BC%91",
                  "seconds=" + "9" * 5000, "&".join(["a=1"] * 100)):
        assert requested_seconds(query) is None, query


def spin_in_a_thread(seconds: float) -> threading.Thread:
    def busy_worker(until):
        while time.monotonic() < until:
            pass

    thread = threading.Thread(target=busy_worker, args=(time.monotonic() + seconds,))
    thread.start()
    return thread


def wait_until_blocked(thread: threading.Thread, within_s: float = 10) -> None:
    """Until ``thread`` uses no CPU for a while: a thread still on its way into a wait when the
    sampler starts is rightly charged for that CPU, at the wait's line."""
    clock = time.pthread_getcpuclockid(thread.ident)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        before = time.clock_gettime_ns(clock)
        time.sleep(0.05)
        if time.clock_gettime_ns(clock) == before:
            return
    raise AssertionError(f"{thread.name} kept using CPU for {within_s}s")


def test_the_sampler_keeps_at_most_its_window_and_skips_idle_threads():
    sampler = Sampler(100)
    assert sampler.ticks.maxlen == WINDOW_S * 100
    idle = threading.Event()
    sleeper = threading.Thread(target=idle.wait, args=(10,))
    sleeper.start()
    wait_until_blocked(sleeper)
    sampler.start()
    try:
        spin_in_a_thread(0.5).join()
    finally:
        sampler.stop()
        idle.set()
        sleeper.join()
    by_leaf = cpu_ns_by_leaf(parse(sampler.profile(WINDOW_S)))
    assert max(by_leaf, key=by_leaf.get) == "spin_in_a_thread.<locals>.busy_worker"
    assert not any(name in ("Event.wait", "Condition.wait") for name in by_leaf)
