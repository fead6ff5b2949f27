#!/usr/bin/env python3
"""Hostile requests against toy-redis and Debian's redis-server (issue 10, item 6).

While one client sends a hostile request, another process PINGs the same server every
millisecond; the worst PING round trip (p100) is printed for both servers, next to the worst
round trip of the same pinger against the idle server. Target: toy-redis's p100 < 50 ms.

Requests: KEYS with a 20-star pattern and with 64 KB patterns (over 1,000 40-byte keys), the
13-byte frame `*2147483647\\r\\n`, and KEYS * and FLUSHALL over --keys keys.

Run from the repo root: .venv/bin/python bench/toy_redis_hostile.py [--keys N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_redis_common import Client, load_keys, start_pair  # noqa: E402

from tests.toy_redis.pinger import Pinger  # noqa: E402

TARGET_S = 0.050


def worst_ping(port: int, seconds: float, action=None) -> float:
    pinger = Pinger(port, seconds)
    if action is not None:
        action()
    return pinger.result()["worst"]


def keys(port: int, pattern: bytes):
    def action():
        with Client(port, timeout=600) as client:
            client.call("KEYS", pattern)
    return action


def huge_count(port: int):
    def action():
        with Client(port) as client:
            client.sock.sendall(b"*2147483647\r\n")
            time.sleep(1)
    return action


def flushall(port: int):
    def action():
        with Client(port, timeout=600) as client:
            client.call("FLUSHALL")
    return action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300_000)
    args = parser.parse_args()
    redis, toy = start_pair()
    scenarios = [
        ("KEYS, 20 stars", "small", lambda port: keys(port, b"*a" * 19 + b"*b")),
        ("KEYS, 64 KB of *a", "small", lambda port: keys(port, b"*a" * 32768)),
        ("KEYS, 64 KB of [ab]*", "small", lambda port: keys(port, b"[ab]*" * 16384)),
        ("*2147483647", "small", huge_count),
        (f"KEYS * over {args.keys:,} keys", "big", lambda port: keys(port, b"*")),
        (f"FLUSHALL of {args.keys:,} keys", "big", flushall),
    ]
    try:
        print("worst PING round trip of another client (ms)")
        print(f"  {'request':<32}{'redis-server':>13}{'toy-redis':>11}{'toy idle':>10}  target")
        for name, dataset, make in scenarios:
            results = {}
            for server in (redis, toy):
                with Client(server.port) as client:
                    client.call("FLUSHALL")
                if dataset == "small":
                    load_keys(server.port, 1000, key_size=40, prefix=b"a" * 30)
                else:
                    load_keys(server.port, args.keys)
                idle = worst_ping(server.port, 1)
                results[server.name] = (worst_ping(server.port, 3, make(server.port)), idle)
            toy_worst, toy_idle = results["toy-redis"]
            verdict = "ok" if toy_worst < TARGET_S else "MISSED"
            print(f"  {name:<32}{results['redis-server'][0] * 1000:>13.1f}{toy_worst * 1000:>11.1f}"
                  f"{toy_idle * 1000:>10.1f}  < {TARGET_S * 1000:.0f} ms {verdict}")
    finally:
        redis.stop()
        toy.stop()


if __name__ == "__main__":
    main()
