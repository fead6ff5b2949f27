#!/usr/bin/env python3
"""`homelab status` on the deployed lab: how long one full status takes, against the least it could.

Target (issue 14): under 2 s on the 4-node lab. Runs `homelab status --json` (in-process, as the
CLI does) ROUNDS times and, alternating with it in the same run, the reference: one `up` query to
Prometheus and one alerts query to Alertmanager, back to back, the two round trips no status can
skip. Prints the medians and their ratio.

Run from the repo root with the lab deployed (under the lab lock):
    flock /tmp/homelab-lab.lock .venv/bin/python bench/status_bench.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from homelab.cli import main  # noqa: E402
from homelab.maintenance import alertmanager  # noqa: E402
from homelab.status import _prometheus_query  # noqa: E402
from homelab.topology import Topology  # noqa: E402

LAB_INVENTORY = REPO / "inventory" / "lab.py"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    topology = Topology.load(LAB_INVENTORY)
    prometheus = topology.access("prometheus")
    manager = alertmanager(topology)

    def status() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            main(["status", "--json", "--inventory", str(LAB_INVENTORY)])

    def reference() -> None:
        _prometheus_query(prometheus, "up")
        manager.firing()

    status()  # warm: imports, connections
    full, least = [], []
    for _ in range(args.rounds):
        full.append(timed(status))
        least.append(timed(reference))
    full_median, least_median = statistics.median(full), statistics.median(least)
    print(f"homelab status (median of {args.rounds}): {full_median * 1000:.0f} ms (max {max(full) * 1000:.0f} ms; target < 2000)")
    print(f"reference, one Prometheus and one Alertmanager query: {least_median * 1000:.0f} ms")
    print(f"ratio: {full_median / least_median:.1f}x")


if __name__ == "__main__":
    main_bench()
