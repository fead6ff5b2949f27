"""Test-only: imported by Python at start-up when this folder is on PYTHONPATH, it gives toy-redis two
commands with a known cost, so a profile can be checked against what it must show:

    PLANTED.HOT <ms>     burns CPU in deliberate_hot_spot for that long
    PLANTED.LEAK <kb>    keeps that many KB more in deliberate_leak's list, for good

Never installed on a node by a deploy: the profiling lab test uploads it for its own run only."""

import time

from toy_redis.commands.base import command, to_int

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


@command("planted.hot", 2, "", group="server", summary="Test-only: burn CPU for <ms> milliseconds.")
def cmd_planted_hot(conn, argv):
    return deliberate_hot_spot(to_int(argv[1]) / 1000)


@command("planted.leak", 2, "", group="server", summary="Test-only: keep <kb> KB more, for good.")
def cmd_planted_leak(conn, argv):
    return deliberate_leak(to_int(argv[1]))
