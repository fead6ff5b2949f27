#!/usr/bin/env python3
"""A scrape with the right login while peers without it flood toy-redis's metrics endpoint.

One toy-redis with a cost-10 bcrypt login (exporter-toolkit's usual cost). Reference: scrapes of
the idle endpoint, the first (its login checked by bcrypt) and the next ones (remembered). Then
the same during a flood of --flooders peers from another address (half holding connections
idle, a quarter guessing passwords, a quarter asking without a login; tests/flooder.py), and the
ratios. Before the fix the flooded scrape was pushed out unanswered.

Run from the repo root: .venv/bin/python bench/toy_redis_metrics_flood.py [--flooders 200] [--scrapes 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.flooder import Flooder  # noqa: E402
from tests.toy_redis.conftest import ToyRedis  # noqa: E402
from tests.toy_redis.test_metrics_auth import scrape, users_file  # noqa: E402
from toy_redis.metrics import METRICS_LISTEN_BACKLOG, REQUEST_TIMEOUT_S  # noqa: E402


def timed_scrapes(port: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        status = scrape(port, REQUEST_TIMEOUT_S)
        if status != 200:
            sys.exit(f"bench: a scrape got {status}")
        times.append(time.monotonic() - started)
    return times


def measure(flooders: int, scrapes: int) -> dict[str, list[float]]:
    results = {}
    for label in ("idle", "flood"):
        workdir = Path(tempfile.mkdtemp(prefix="toy-metrics-flood-"))
        server = ToyRedis(workdir, "--metrics-users-file", str(users_file(workdir, cost=10))).start()
        flood = None
        try:
            if label == "flood":
                flood = Flooder(server.metrics_port, {"idle": flooders // 2, "guess": flooders // 4,
                                                      "anonymous": flooders - flooders // 2 - flooders // 4},
                                seconds=(scrapes + 1) * REQUEST_TIMEOUT_S)
            results[label] = timed_scrapes(server.metrics_port, scrapes)
            if flood is not None:
                results["flood connections"] = [flood.result()["connections"]]
        finally:
            if flood is not None:
                flood.stop()
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flooders", type=int, default=2 * METRICS_LISTEN_BACKLOG)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    results = measure(args.flooders, args.scrapes)
    idle, flood = results["idle"], results["flood"]
    print(f"{'':28}{'first (bcrypt)':>16}{'next (median)':>16}{'next (worst)':>16}")
    for label, times in (("idle", idle), (f"{args.flooders} flooders", flood)):
        print(f"{label:28}{times[0]:>15.3f}s{statistics.median(times[1:]):>15.3f}s{max(times[1:]):>15.3f}s")
    print(f"flood/idle, first scrape: {flood[0] / idle[0]:.1f}x; next scrapes (median): "
          f"{statistics.median(flood[1:]) / statistics.median(idle[1:]):.1f}x; "
          f"flooders' connections: {results['flood connections'][0]}")


if __name__ == "__main__":
    main()
