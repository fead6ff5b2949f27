"""Hostile requests (issue 10): pathological glob patterns, huge multibulk counts, big KEYS and
FLUSHALL neither stall other clients nor answer differently from redis-server."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import RawClient
from .pinger import Pinger, prioritize

# How much longer than an idle server's worst PING round trip (measured just before) another
# client's worst PING may take while the hostile request is served. Before the fix these
# requests stalled everyone for seconds. The target is 50 ms, which
# bench/toy_redis_hostile.py measures; here the bound is twice that, because on a shared 2-core
# machine a server busy with its slices waits for the CPU behind other processes. The server
# and the pinger run at a higher scheduling priority when the test may set one (root), for the
# same reason.
MAX_EXTRA_PING_S = 0.100
PRIORITY = -10


def stall(toy, hostile) -> str | None:
    """Run hostile() while another process PINGs: None if its worst round trip stayed near the idle
    one, else what it waited."""
    prioritize(toy.process.pid, PRIORITY)
    port = toy.port
    idle = Pinger(port, 1, PRIORITY).result()["worst"]
    pinger = Pinger(port, 3, PRIORITY)
    hostile()
    worst = pinger.result()["worst"]
    return None if worst < idle + MAX_EXTRA_PING_S else f"a PING waited {worst * 1000:.0f} ms (idle worst {idle * 1000:.0f} ms)"


def assert_not_stalled(toy, hostile) -> None:
    assert (waited := stall(toy, hostile)) is None, waited


def load_keys(port: int, names: list[bytes]) -> None:
    client = RawClient(port, timeout=60)
    for start in range(0, len(names), 50_000):
        batch = names[start : start + 50_000]
        client.send(b"".join(client.command("SET", name, "v") for name in batch))
        for _ in batch:
            client.read()
    client.close()


TWENTY_STARS = b"*a" * 19 + b"*b"
HOSTILE_PATTERNS = {
    "twenty_stars": TWENTY_STARS,
    "64k_of_stars": b"*a" * 32768,
    "64k_of_classes": b"[ab]*" * 16384,
}


# A stall in the server comes back with every fresh pattern; a loaded machine's scheduling delay
# (a PING once waited 124 ms under load 16, with the matcher working in 5 ms slices) seldom does
# three times running.
PATTERN_ATTEMPTS = 3


@pytest.mark.parametrize("name", sorted(HOSTILE_PATTERNS))
def test_pathological_keys_pattern_does_not_stall_others(name, r, toy):
    load_keys(toy.port, [b"a" * 39 + b"%d" % (i % 10) for i in range(1000)] + [b"a" * 40])
    client = RawClient(toy.port, timeout=30)
    stalls = []
    for attempt in range(PATTERN_ATTEMPTS):
        # Each attempt's pattern differs in one byte (still matching nothing), so it is compiled
        # afresh rather than taken from the server's pattern cache.
        pattern = HOSTILE_PATTERNS[name].replace(b"a", bytes([ord("c") + attempt]), 1)

        def hostile():
            started = time.monotonic()
            assert client.call("KEYS", pattern) == []
            assert time.monotonic() - started < 5

        if (waited := stall(toy, hostile)) is None:
            break
        stalls.append(waited)
    else:
        pytest.fail(f"every attempt stalled other clients: {'; '.join(stalls)}")
    client.close()


def test_huge_multibulk_count_does_not_stall_others(toy):
    clients = [RawClient(toy.port), RawClient(toy.port)]

    def hostile():
        clients[0].send(b"*2147483647\r\n")
        clients[1].send(b"*1\r\n*2147483647\r\n")
        time.sleep(1)

    assert_not_stalled(toy, hostile)
    for client in clients:
        client.close()
    assert RawClient(toy.port).call("PING") == b"PONG"


@pytest.mark.parametrize("command", [["KEYS", "*"], ["KEYS", "k1*"], ["FLUSHALL"]])
def test_big_keys_and_flushall_yield_to_other_clients(command, r, toy):
    count = 300_000
    load_keys(toy.port, [b"k%d" % i for i in range(count)])
    client = RawClient(toy.port, timeout=60)
    replies = []
    assert_not_stalled(toy, lambda: replies.append(client.call(*command)))
    client.close()
    reply = replies[0]
    if command[0] == "FLUSHALL":
        assert reply == b"OK" and r.dbsize() == 0
    elif command[1] == "*":
        assert len(reply) == count
    else:
        assert sorted(reply) == sorted(b"k%d" % i for i in range(count) if str(i).startswith("1"))


# Keys and patterns over bytes that exercise Redis's reading of patterns: escapes, classes,
# ranges (with `]` as a bound, reversed, across the signed-char boundary), stars.
KEY_BYTES = [b"a", b"b", b"]", b"-", b"*", b"^", b"\\", b"\x80", b"\xff", b"["]
GLOB_KEYS = sorted({b""} | {bytes([i % 5 + 97]) * (i % 4) + KEY_BYTES[i % len(KEY_BYTES)] + KEY_BYTES[(i * 7) % len(KEY_BYTES)]
                           for i in range(200)} | {b"ab", b"aab", b"ba", b"a]b", b"a-b", b"\\", b"a\\"})
pattern_bytes = st.sampled_from(KEY_BYTES + [b"?", b"*", b"[", b"]", b"^", b"-", b"\\", b"a", b"b"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.lists(pattern_bytes, max_size=10).map(b"".join))
def test_keys_patterns_match_like_redis(toy, real_redis, pattern):
    replies = []
    for port in (real_redis.port, toy.port):
        client = RawClient(port)
        if client.call("DBSIZE") != len(GLOB_KEYS):
            client.call("FLUSHALL")
            for key in GLOB_KEYS:
                client.call("SET", key, "v")
        replies.append(sorted(client.call("KEYS", pattern)))
        client.close()
    assert replies[1] == replies[0], f"KEYS {pattern!r}"
