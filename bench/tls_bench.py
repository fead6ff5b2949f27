#!/usr/bin/env python3
"""What TLS costs the deploy and the scrapes (issue 13's targets), on the 4-node lab in one run.

1. No-op rerun of the whole stack (deploys/all.py): the median of NOOP_RUNS reruns with pki.tls on
   against the median with it off. Target: at most 1.2x.
2. Scrape duration p99: for each job Prometheus scrapes over https once TLS is on, the 0.99
   quantile of its scrape_duration_seconds while TLS was on against the same job's while it was
   off. Target: at most 2x. A p99 needs samples: at the lab's 15s interval a phase gave ~8 per
   target, so its "p99" was its slowest scrape. Each phase therefore deploys Prometheus with
   BENCH_SCRAPE_INTERVAL (the bench's data only; the lab's own settings come back at the end) and
   measures from the end of SETTLE_S through the reruns and a further SCRAPE_WINDOW_S of quiet
   scraping, over a hundred samples per target; each ratio is printed with the fewest samples any
   of the job's targets had.
   The health probes' job (PROBE_JOB) is compared like for like: its scrape over https includes a
   probe over https, so its scrape duration held two TLS exchanges against none. Its row instead
   compares probe_duration_seconds, the probe alone: the TLS module's https probe against the
   plain module's http probe of the same health URLs (blackbox makes a new connection per probe,
   so each https probe includes a full handshake).
   Measured 2026-11-30 (4-node lab, 2 shared cores, another session's tests running): worst 1.58x
   (toy-redis 1.58x, node 1.35x, the rest below 1x as the plain phase was the noisier one), with
   114-135 samples per target. Before keep-alive on toy-redis's metrics and the relay's write-limit
   fix, the same bench gave the relay 84x (a timeout on every other kept-alive scrape).

Run as root from the repo root, under the lab lock:
    flock /tmp/homelab-lab.lock .venv/bin/python bench/tls_bench.py
    flock /tmp/homelab-lab.lock .venv/bin/python bench/tls_bench.py --jobs nginx,mtail
It brings the lab up (reusing a running one) and leaves it deployed with its own settings (TLS off).
With --jobs, only those scrape jobs are compared: each deploy is limited to the hosts they scrape
and Prometheus's and blackbox's, and the no-op rerun (a whole-stack figure) is not timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deploy_bench import BIN, NOOP_RUNS, REPO, timed  # bench/, the script's folder, is first on sys.path

import runpy

from homelab.topology import Topology
from roles.prometheus import PROBE_JOB

LAB_INVENTORY = REPO / "inventory" / "lab.py"
TLS_ON = {"tls": True}
# Scrapes after a converging deploy until Prometheus has restarted and every target answers again.
SETTLE_S = 60
# Scrape interval (and timeout) during the bench's phases: enough samples per target for a p99.
BENCH_SCRAPE_INTERVAL = "2s"
# Quiet scraping after the reruns, in each phase.
SCRAPE_WINDOW_S = 180
TARGETS = {"no-op rerun": 1.2, "scrape p99": 2.0}


def tls_inventory() -> Path:
    """inventory/lab.py with `pki = TLS_ON` in group_data/all.py, for reaching the nodes over TLS."""
    folder = Path(tempfile.mkdtemp(prefix="homelab-tls-bench-"))
    shutil.copytree(LAB_INVENTORY.parent, folder, dirs_exist_ok=True)
    with open(folder / "group_data" / "all.py", "a") as all_data:
        all_data.write(f"\npki = {TLS_ON!r}\n")
    return folder / LAB_INVENTORY.name


def bench_prometheus_data() -> str:
    """--data for the prometheus key: the lab's group data with BENCH_SCRAPE_INTERVAL."""
    lab_data = runpy.run_path(str(LAB_INVENTORY.parent / "group_data" / "prometheus.py"))["prometheus"]
    fast = {**lab_data, "scrape_interval": BENCH_SCRAPE_INTERVAL, "scrape_timeout": BENCH_SCRAPE_INTERVAL}
    return "prometheus=" + json.dumps(fast)


def phase(*data: str, limit: list[str] = ()) -> tuple[float | None, float, float]:
    """Converge, then time the no-op reruns (not with ``limit``, pyinfra's --limit arguments) and
    scrape on: (median rerun s, phase start, phase end) in Unix time."""
    deploy = [str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py", "--data", bench_prometheus_data(),
              *data, *limit]
    timed(*deploy)
    time.sleep(SETTLE_S)
    start = time.time()
    median = None if limit else statistics.median(timed(*deploy) for _ in range(NOOP_RUNS))
    time.sleep(SCRAPE_WINDOW_S)
    return median, start, time.time()


def limit_to(jobs: list[str]) -> list[str]:
    """pyinfra's --limit arguments for the hosts ``jobs`` scrape and Prometheus's and blackbox's;
    an unknown job stops the bench with one line."""
    topology = Topology.load(LAB_INVENTORY)
    known = {job.name: job for job in topology.scrape_jobs()}
    unknown = sorted(set(jobs) - set(known))
    if unknown:
        sys.exit(f"bench: --jobs: expected scrape jobs among {', '.join(sorted(known))}, got {', '.join(unknown)}")
    hosts = {target.host for job in jobs for target in known[job].targets}
    hosts |= {*topology.hosts_of("prometheus"), *topology.hosts_of("blackbox")}
    return [argument for host in sorted(hosts) for argument in ("--limit", host)]


def p99(prometheus, metric: str, job: str, start: float, end: float) -> tuple[float, int] | None:
    """The highest p99 of ``metric`` among ``job``'s instances between start and end, and the fewest
    samples an instance had then (None: not scraped then)."""
    window = f'{metric}{{job="{job}"}}[{int(end - start)}s]'

    def query(expr: str) -> float | None:
        answer = prometheus.get("/api/v1/query", params={"query": expr, "time": end}, timeout=30).json()
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    quantile = query(f"max(quantile_over_time(0.99, {window}))")
    return None if quantile is None else (quantile, int(query(f"min(count_over_time({window}))")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--jobs", type=lambda text: text.split(","), default=None,
                        help="compare only these scrape jobs, e.g. nginx,mtail (no no-op rerun timing)")
    jobs = parser.parse_args().jobs
    limit = limit_to(jobs) if jobs else []
    timed(str(BIN / "lab"), "up", str(LAB_INVENTORY))
    try:
        plain_noop, plain_start, plain_end = phase(limit=limit)
        tls_noop, tls_start, tls_end = phase("--data", "pki=" + json.dumps(TLS_ON), limit=limit)
        if not limit:
            print(f"whole stack no-op rerun, median of {NOOP_RUNS}: TLS off {plain_noop:.2f}s, TLS on {tls_noop:.2f}s, "
                  f"ratio {tls_noop / plain_noop:.2f}x (target <= {TARGETS['no-op rerun']}x)", flush=True)
        prometheus = Topology.load(tls_inventory()).access("prometheus")
        active = prometheus.get("/api/v1/targets", params={"state": "active"}, timeout=30).json()["data"]["activeTargets"]
        # The jobs scraped over https with TLS on and over http before (tls-check exists only with TLS).
        secured_jobs = sorted({t["labels"]["job"] for t in active if t["scrapeUrl"].startswith("https://")
                               and (jobs is None or t["labels"]["job"] in jobs)})
        scrapes = {}
        for job in secured_jobs:
            # The probes' job: the probe alone, https against http (see the docstring).
            metric = "probe_duration_seconds" if job == PROBE_JOB else "scrape_duration_seconds"
            label = f"{job} (https probe vs http probe)" if job == PROBE_JOB else job
            scrapes[label] = (p99(prometheus, metric, job, plain_start, plain_end),
                              p99(prometheus, metric, job, tls_start, tls_end))
    finally:
        timed(str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py", *limit)  # the lab's own settings back
    print(f"{'scrape duration p99':40}{'plain':>10}{'TLS':>10}{'ratio':>8}  samples (plain/TLS, fewest per target)")
    ratios = []
    for label, (plain, tls) in scrapes.items():
        if plain is None or tls is None:
            continue
        ratios.append(tls[0] / plain[0])
        print(f"{label:40}{plain[0] * 1000:>8.1f}ms{tls[0] * 1000:>8.1f}ms{tls[0] / plain[0]:>7.2f}x  {plain[1]}/{tls[1]}")
    print(f"worst scrape p99 ratio {max(ratios):.2f}x (target <= {TARGETS['scrape p99']}x)")


if __name__ == "__main__":
    main()
