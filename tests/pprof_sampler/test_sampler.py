"""The sampler names each frame of a stack with the function and line it is at, also when its
cache of stacks was dropped in between (a service whose code paths keep changing)."""

from __future__ import annotations

import threading
import time

import pytest
from pprof_sampler import Sampler
from pprof_sampler import sampler as sampler_module

from .profiles import parse

SPIN_S = 0.3


def spins(until):
    while time.monotonic() < until: pass  # noqa: E701 (one line: every instruction of the loop is on it)


def calls_spins(until):
    spins(until)


CALL_LINE = calls_spins.__code__.co_firstlineno + 1
SPIN_LINE = spins.__code__.co_firstlineno + 1


def stacks_with_lines(body: bytes) -> dict[tuple[tuple[str, int], ...], int]:
    """Sampled stacks, leaf first, as (function, line) pairs -> CPU nanoseconds."""
    profile = parse(body)
    functions = {function.id: profile.string_table[function.name] for function in profile.function}
    where = {location.id: (functions[location.line[0].function_id], location.line[0].line)
             for location in profile.location}
    stacks: dict = {}
    for sample in profile.sample:
        stack = tuple(where[location] for location in sample.location_id)
        stacks[stack] = stacks.get(stack, 0) + sample.value[1]
    return stacks


@pytest.mark.parametrize("cache_limit", [sampler_module.CACHE_LIMIT, 1])
def test_each_frame_is_named_with_its_function_and_line(monkeypatch, cache_limit):
    monkeypatch.setattr(sampler_module, "CACHE_LIMIT", cache_limit)
    sampler = Sampler(100).start()
    try:
        # Two threads with the same stack, then one more with another: shared and new stacks.
        for threads in (2, 1):
            workers = [threading.Thread(target=calls_spins, args=(time.monotonic() + SPIN_S,)) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        spins(time.monotonic() + SPIN_S)
    finally:
        sampler.stop()
    stacks = stacks_with_lines(sampler.profile(10))
    in_threads = sum(ns for stack, ns in stacks.items() if stack[:2] == (("spins", SPIN_LINE), ("calls_spins", CALL_LINE)))
    anywhere = sum(ns for stack, ns in stacks.items() if stack[0][0] == "spins")
    # The spinning threads were seen, at the lines they were at (pprof lists the leaf first) and
    # nowhere else; the main thread's own spin too, under the test's frames.
    assert in_threads > 0 and anywhere > in_threads
    assert {stack[0] for stack in stacks if stack[0][0] == "spins"} == {("spins", SPIN_LINE)}
    assert {stack[1] for stack in stacks if stack[0][0] == "spins"} >= {("calls_spins", CALL_LINE)}
    # Spinning is what the process did: it holds most of the CPU the profile counts.
    assert anywhere >= 0.5 * sum(stacks.values())
