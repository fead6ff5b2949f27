#!/usr/bin/env python3
"""What TLS costs the deploy and the scrapes (issue 13's targets), on the 4-node lab in one run.

1. No-op rerun of the whole stack (deploys/all.py): the median of NOOP_RUNS reruns with pki.tls on
   against the median with it off. Target: at most 1.2x.
2. Scrape duration p99: for each job Prometheus scrapes over https once TLS is on, the 0.99
   quantile of its scrape_duration_seconds while TLS was on against the same job's while it was
   off (each phase: from its converging deploy to the end of its reruns). Target: at most 2x.

Run as root from the repo root, under the lab lock:
    flock /tmp/homelab-lab.lock .venv/bin/python bench/tls_bench.py
It brings the lab up (reusing a running one) and leaves it deployed with its own settings (TLS off).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from deploy_bench import BIN, NOOP_RUNS, REPO, timed  # bench/, the script's folder, is first on sys.path

from homelab.topology import Topology

LAB_INVENTORY = REPO / "inventory" / "lab.py"
TLS_ON = {"tls": True}
# Scrapes after a converging deploy until Prometheus has restarted and every target answers again.
SETTLE_S = 60
TARGETS = {"no-op rerun": 1.2, "scrape p99": 2.0}


def tls_inventory() -> Path:
    """inventory/lab.py with `pki = TLS_ON` in group_data/all.py, for reaching the nodes over TLS."""
    folder = Path(tempfile.mkdtemp(prefix="homelab-tls-bench-"))
    shutil.copytree(LAB_INVENTORY.parent, folder, dirs_exist_ok=True)
    with open(folder / "group_data" / "all.py", "a") as all_data:
        all_data.write(f"\npki = {TLS_ON!r}\n")
    return folder / LAB_INVENTORY.name


def phase(*data: str) -> tuple[float, float, float]:
    """Converge, then time the no-op reruns: (median rerun s, phase start, phase end) in Unix time."""
    deploy = [str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py", *data]
    timed(*deploy)
    time.sleep(SETTLE_S)
    start = time.time()
    median = statistics.median(timed(*deploy) for _ in range(NOOP_RUNS))
    return median, start, time.time()


def p99(prometheus, job: str, start: float, end: float) -> float | None:
    """The highest p99 of ``job``'s instances between start and end (None: not scraped then)."""
    query = f'max(quantile_over_time(0.99, scrape_duration_seconds{{job="{job}"}}[{int(end - start)}s]))'
    result = prometheus.get("/api/v1/query", params={"query": query, "time": end}, timeout=30).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def main() -> None:
    timed(str(BIN / "lab"), "up", str(LAB_INVENTORY))
    try:
        plain_noop, plain_start, plain_end = phase()
        tls_noop, tls_start, tls_end = phase("--data", "pki=" + json.dumps(TLS_ON))
        print(f"whole stack no-op rerun, median of {NOOP_RUNS}: TLS off {plain_noop:.2f}s, TLS on {tls_noop:.2f}s, "
              f"ratio {tls_noop / plain_noop:.2f}x (target <= {TARGETS['no-op rerun']}x)", flush=True)
        prometheus = Topology.load(tls_inventory()).access("prometheus")
        active = prometheus.get("/api/v1/targets", params={"state": "active"}, timeout=30).json()["data"]["activeTargets"]
        # The jobs scraped over https with TLS on and over http before (tls-check exists only with TLS).
        secured_jobs = sorted({t["labels"]["job"] for t in active if t["scrapeUrl"].startswith("https://")})
        scrapes = {job: (p99(prometheus, job, plain_start, plain_end), p99(prometheus, job, tls_start, tls_end))
                   for job in secured_jobs}
    finally:
        timed(str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py")  # the lab's own settings back
    print(f"{'scrape duration p99':24}{'plain':>10}{'TLS':>10}{'ratio':>8}")
    ratios = []
    for job, (plain, tls) in scrapes.items():
        if plain is None or tls is None:
            continue
        ratios.append(tls / plain)
        print(f"{job:24}{plain * 1000:>8.1f}ms{tls * 1000:>8.1f}ms{tls / plain:>7.2f}x")
    print(f"worst scrape p99 ratio {max(ratios):.2f}x (target <= {TARGETS['scrape p99']}x)")


if __name__ == "__main__":
    main()
