"""Test-only: a known CPU cost and a known leak, in functions of their own so that a CPU profile
must show deliberate_hot_spot on top and a memory profile the line in deliberate_leak that keeps
the bytes. Imported by the planted sitecustomize hooks of toy-redis and the alert relay."""

import time

_kept: list[bytes] = []


def deliberate_hot_spot(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return spins


def deliberate_leak(kilobytes: int) -> int:
    for _ in range(kilobytes):
        _kept.append(bytes(1024))
    return len(_kept)
