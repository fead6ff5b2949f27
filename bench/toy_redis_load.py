#!/usr/bin/env python3
"""Load scenarios from the original notes against toy-redis and, in the same run, redis-server.

Four mixes (balanced GET/SET/EXPIRE, GET-heavy, SET-heavy, EXPIRE-heavy), 100 virtual users by
default, each on its own connection and each bounded in time. Every virtual user works on its
own keys and checks that each read matches what it last wrote on its connection (and that a key
it gave a TTL is gone once the TTL has passed): the notes' bug of GET overtaking SET under 100
users shows up here as a mismatch. Key cardinality and key/value sizes are parameters.

Prints ops/s and p50/p99 latency for both servers and the toy/redis ratios; exits 1 on any
mismatch. One Python process drives all virtual users, so on a 2-core machine the client usually
sets the pace: a ratio near 1 says toy-redis keeps up with this load; the server's own ceiling is
what toy_redis_compare.py measures with redis-benchmark.

Run from the repo root: .venv/bin/python bench/toy_redis_load.py [--users 100] [--seconds 10]
    [--keys 10000] [--key-size 16] [--value-size 32] [--scenario NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_redis_common import Client, ratio, start_pair  # noqa: E402

SCENARIOS = {
    "balanced": {"GET": 40, "SET": 40, "EXPIRE": 20},
    "get-heavy": {"GET": 90, "SET": 8, "EXPIRE": 2},
    "set-heavy": {"GET": 8, "SET": 90, "EXPIRE": 2},
    "expire-heavy": {"GET": 20, "SET": 20, "EXPIRE": 60},
}
# Reads within this much of a TTL may see the key or not (clocks and the trip to the server).
TTL_SLACK_S = 0.05
STALL_TIMEOUT_S = 10


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class VirtualUser:
    def __init__(self, number: int, port: int, mix: dict[str, int], keys: int, key_size: int, value_size: int,
                 deadline: float, seed: int):
        self.number, self.port, self.deadline = number, port, deadline
        self.random = random.Random(seed)
        self.ops = self.random.choices(list(mix), weights=list(mix.values()), k=4096)
        prefix = b"u%03d:" % number
        self.keys = [prefix + b"%0*d" % (max(1, key_size - len(prefix)), i) for i in range(keys)]
        self.value_size = value_size
        # key -> (value, expires_at or None); absent: never written by us (or expired).
        self.expected: dict[bytes, tuple[bytes, float | None]] = {}
        self.latencies: dict[str, list[float]] = {op: [] for op in mix}
        self.mismatches: list[str] = []
        self.sequence = 0

    async def run(self) -> None:
        reader_stream, writer = await asyncio.open_connection("127.0.0.1", self.port)
        parser = hiredis.Reader()

        async def call(frame: bytes):
            writer.write(frame)
            while True:
                reply = parser.gets()
                if reply is not False:
                    return reply
                data = await reader_stream.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                parser.feed(data)

        try:
            index = 0
            while time.monotonic() < self.deadline:
                op = self.ops[index % len(self.ops)]
                index += 1
                key = self.random.choice(self.keys)
                if op == "SET":
                    self.sequence += 1
                    value = (b"%d:%d:" % (self.number, self.sequence)).ljust(self.value_size, b"v")
                    start = time.perf_counter()
                    reply = await call(encode(b"SET", key, value))
                    self.latencies[op].append(time.perf_counter() - start)
                    if reply != b"OK":
                        self.mismatches.append(f"SET {key!r}: {reply!r}")
                    self.expected[key] = (value, None)
                elif op == "EXPIRE":
                    ttl = self.random.randint(1, 3)
                    sent = time.time()
                    start = time.perf_counter()
                    reply = await call(encode(b"EXPIRE", key, b"%d" % ttl))
                    self.latencies[op].append(time.perf_counter() - start)
                    state = self.expected.get(key)
                    alive = state is not None and (state[1] is None or sent < state[1] - TTL_SLACK_S)
                    gone = state is None or (state[1] is not None and sent > state[1] + TTL_SLACK_S)
                    if (alive and reply != 1) or (gone and reply != 0):
                        self.mismatches.append(f"EXPIRE {key!r}: {reply!r}, expected {1 if alive else 0}")
                    if reply == 1:
                        self.expected[key] = (state[0] if state else b"?", sent + ttl)
                    elif gone:
                        self.expected.pop(key, None)
                else:
                    sent = time.time()
                    start = time.perf_counter()
                    reply = await call(encode(b"GET", key))
                    self.latencies[op].append(time.perf_counter() - start)
                    state = self.expected.get(key)
                    if state is None:
                        if reply is not None:
                            self.mismatches.append(f"GET {key!r}: {reply!r}, expected nil")
                    elif state[1] is None or sent < state[1] - TTL_SLACK_S:
                        if reply != state[0]:
                            self.mismatches.append(f"GET {key!r}: {reply!r}, expected {state[0]!r}")
                    elif sent > state[1] + TTL_SLACK_S:
                        if reply is not None:
                            self.mismatches.append(f"GET {key!r}: {reply!r} after its TTL")
                        self.expected.pop(key, None)
        finally:
            writer.close()


async def run_scenario(port: int, mix, args) -> tuple[float, dict[str, list[float]], list[str]]:
    with Client(port) as client:
        client.call("FLUSHALL")
    deadline = time.monotonic() + args.seconds
    users = [
        VirtualUser(n, port, mix, max(1, args.keys // args.users), args.key_size, args.value_size, deadline, seed=n)
        for n in range(args.users)
    ]
    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(u.run() for u in users)), args.seconds + STALL_TIMEOUT_S)
    except asyncio.TimeoutError:
        return 0.0, {}, [f"virtual users still waiting for replies {STALL_TIMEOUT_S} s after the deadline"]
    elapsed = time.monotonic() - start
    latencies: dict[str, list[float]] = {}
    for user in users:
        for op, values in user.latencies.items():
            latencies.setdefault(op, []).extend(values)
    total = sum(len(v) for v in latencies.values())
    return total / elapsed, latencies, [m for u in users for m in u.mismatches]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def main_async(args) -> int:
    redis, toy = start_pair()
    failures = 0
    try:
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        print(f"{args.users} virtual users, {args.seconds:g} s per scenario and server, {args.keys} keys, "
              f"keys {args.key_size} B, values {args.value_size} B")
        for name in names:
            mix = SCENARIOS[name]
            results = {}
            for server in (redis, toy):
                results[server.name] = await run_scenario(server.port, mix, args)
            print(f"\n{name} ({', '.join(f'{op} {share}%' for op, share in mix.items())})")
            print(f"  {'':<14}{'ops/s':>10}" + "".join(f"{op + ' p50/p99 ms':>22}" for op in mix) + "  mismatches")
            for server_name, (rate, latencies, mismatches) in results.items():
                cells = "".join(
                    f"{percentile(latencies.get(op, []), 50) * 1000:>11.2f}/{percentile(latencies.get(op, []), 99) * 1000:<10.2f}"
                    for op in mix
                )
                print(f"  {server_name:<14}{rate:>10,.0f}{cells}  {len(mismatches)}")
                for mismatch in mismatches[:5]:
                    print(f"    {mismatch}")
                failures += len(mismatches)
            print(f"  toy/redis ops/s ratio {ratio(results['toy-redis'][0], results['redis-server'][0])}")
    finally:
        redis.stop()
        toy.stop()
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10_000, help="key cardinality, shared out among the users")
    parser.add_argument("--key-size", type=int, default=16)
    parser.add_argument("--value-size", type=int, default=32)
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.exit(runner(main_async(args)))


if __name__ == "__main__":
    main()
