"""Test-only: imported by Python at start-up when this folder is on PYTHONPATH. It times, with the
main thread's own CPU clock, every call of toy-redis's Connection._send (where a reply is written to
its socket), and adds a command that tells the time so far:

    TIMED.SEND     [CPU ns spent in Connection._send, CPU ns of the main thread]

The time the clock reads themselves add (~1 us a call, several percent of a request) is taken off.

so that the sampler's share for _send can be checked against the truth under redis-benchmark."""

import time

from toy_redis.commands.base import command
from toy_redis.connection import Connection

_untimed = Connection._send
_spent = [0, 0]  # CPU ns between the two clock reads around each call, calls


def _send(self, replies):
    began = time.thread_time_ns()
    try:
        return _untimed(self, replies)
    finally:
        _spent[0] += time.thread_time_ns() - began
        _spent[1] += 1


Connection._send = _send


def _reading_costs() -> int:
    """What the clock reads add between them (a system call each): taken off each call's time."""
    gaps = []
    for _ in range(1000):
        began = time.thread_time_ns()
        gaps.append(time.thread_time_ns() - began)
    return sorted(gaps)[len(gaps) // 2]


@command("timed.send", 1, "", group="server", summary="Test-only: CPU ns in Connection._send, and in the main thread.")
def cmd_timed_send(conn, argv):
    return [_spent[0] - _spent[1] * _reading_costs(), time.thread_time_ns()]
