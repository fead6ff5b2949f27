#!/usr/bin/env python3
"""What TLS costs the deploy and the scrapes (issue 13's targets), on the 4-node lab in one run.

1. No-op rerun of the whole stack (deploys/all.py): the median of NOOP_RUNS reruns with pki.tls on
   against the median with it off. Target: at most 1.2x.
2. Scrape duration p99, per target: for each target of a job Prometheus scrapes over https once
   TLS is on, the 0.99 quantile of its scrape_duration_seconds while TLS was on against the same
   host's target while it was off. Target: at most 2x for every target. A p99 needs samples: of n
   samples, (n - 1) / 100 lie above it, so below P99_SAMPLES it is the slowest scrape or next to it
   (one outlier; at the lab's 15s interval a phase gave ~8). Each phase therefore deploys
   Prometheus with BENCH_SCRAPE_INTERVAL (the bench's data only; the lab's own settings come back
   at the end) and measures SCRAPE_WINDOW_S of quiet scraping after the reruns; each row shows
   both phases' samples, and a ratio resting on fewer than P99_SAMPLES is marked as the max it is.
   The health probes' job (PROBE_JOB) is compared like for like: its scrape over https includes a
   probe over https, so its scrape duration held two TLS exchanges against none. Its row instead
   compares probe_duration_seconds, the probe alone: the TLS module's https probe against the
   plain module's http probe of the same health URLs (blackbox makes a new connection per probe,
   so each https probe includes a full handshake).
   Measured 2026-11-30 with 93 samples per target at a 2s interval (so "p99" = about the max):
   the relay's https probe 57 ms against 10 ms plain (5.6x) and its scrape 2.8x, from Nagle's
   algorithm holding each new TLS 1.3 connection's first reply for the client's delayed ACK
   (service_kit.listen). Before keep-alive on toy-redis's metrics and the relay's write-limit fix,
   the relay's scrape gave 84x (a timeout on every other kept-alive scrape).
   With that fixed (main 29e2399, 310+ samples per target at 1s, load 1.8-2.9): no-op 0.91x; every
   scrape within 2x (0.56-1.24x); the https probes of nginx, Prometheus and Alertmanager 2.1-2.8x
   (2-5 ms plain, 5-11 ms with the handshake each probe makes), the relay's 0.97x.
   The same tree on a quiet machine (2026-11-30 20:48-21:07, 310 samples per target): no-op 1.00x;
   scrapes 0.56-1.27x; probes 0.83-1.38x (alertmanager's the worst): the handshake's cost shows
   against a few-millisecond probe only when the machine is loaded.

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
from homelab.types import seconds
from roles.prometheus import PROBE_JOB

LAB_INVENTORY = REPO / "inventory" / "lab.py"
TLS_ON = {"tls": True}
# Scrapes after a converging deploy until Prometheus has restarted and every target answers again.
SETTLE_S = 60
# Scrape interval (and timeout) during the bench's phases.
BENCH_SCRAPE_INTERVAL = "1s"
QUANTILE = 0.99
# Samples per target for a p99 that is not one outlier: 3 samples lie above it.
P99_SAMPLES = 301
# Quiet scraping after the reruns, in each phase: P99_SAMPLES at BENCH_SCRAPE_INTERVAL, and room
# for a few missed scrapes.
SCRAPE_WINDOW_S = (P99_SAMPLES + 9) * seconds(BENCH_SCRAPE_INTERVAL)
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
    scrape on: (median rerun s, scraping window's start, its end) in Unix time."""
    deploy = [str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py", "--data", bench_prometheus_data(),
              *data, *limit]
    timed(*deploy)
    time.sleep(SETTLE_S)
    median = None if limit else statistics.median(timed(*deploy) for _ in range(NOOP_RUNS))
    # Quiet scraping only: at 1s a rerun's seconds are more than 1% of the samples, its load the p99.
    start = time.time()
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


def quantiles(prometheus, metric: str, job: str, start: float, end: float) -> dict[str, tuple[float, int]]:
    """instance -> (QUANTILE of ``metric`` of ``job``'s target between start and end, its samples)."""
    window = f'{metric}{{job="{job}"}}[{int(end - start)}s]'

    def query(expr: str) -> dict[str, float]:
        answer = prometheus.get("/api/v1/query", params={"query": expr, "time": end}, timeout=30).json()
        return {series["metric"]["instance"]: float(series["value"][1]) for series in answer["data"]["result"]}

    quantile = query(f"max by (instance) (quantile_over_time({QUANTILE}, {window}))")
    counts = query(f"min by (instance) (count_over_time({window}))")
    return {instance: (value, int(counts[instance])) for instance, value in quantile.items()}


def target_pairs(plain: Topology, tls: Topology, job: str) -> list[tuple[str, str]]:
    """(instance without TLS, instance with TLS) of ``job``'s targets, paired by host (and probed
    listener): a probe's instance names its scheme and port, which TLS changes (nginx's site: 80 ->
    443; its redirect, probed only with TLS, has no pair)."""
    if job == PROBE_JOB:
        def by_host(topology):
            return {(p.role, p.endpoint.host, p.listener): p.instance for p in topology.health_probes()}
    else:
        def by_host(topology):
            return {t.host: t.instance for j in topology.scrape_jobs() if j.name == job for t in j.targets}
    before, after = by_host(plain), by_host(tls)
    return [(before[key], after[key]) for key in sorted(set(before) & set(after))]


def report(rows: list[tuple[str, tuple[float, int], tuple[float, int]]]) -> None:
    """One line per target (label, (plain p99 s, samples), (TLS p99 s, samples)), then the verdict."""
    print(f"{'p99 per target':56}{'plain':>9}{'TLS':>9}{'ratio':>8}  samples plain/TLS")
    for label, (plain, plain_n), (tls, tls_n) in rows:
        few = f"  (about the max: under {P99_SAMPLES} samples)" if min(plain_n, tls_n) < P99_SAMPLES else ""
        print(f"{label:56}{plain * 1000:>7.1f}ms{tls * 1000:>7.1f}ms{tls / plain:>7.2f}x  {plain_n}/{tls_n}{few}")
    label, (plain, _), (tls, _) = max(rows, key=lambda row: row[2][0] / row[1][0])
    fewest = min(min(plain[1], tls[1]) for _, plain, tls in rows)
    print(f"worst target p99 ratio {tls / plain:.2f}x, {label} (target <= {TARGETS['scrape p99']}x); "
          f"fewest samples {fewest}" + (f", under {P99_SAMPLES}: a p99 near the max, not a verdict"
                                        if fewest < P99_SAMPLES else ""))


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
        tls_topology = Topology.load(tls_inventory())
        prometheus = tls_topology.access("prometheus")
        active = prometheus.get("/api/v1/targets", params={"state": "active"}, timeout=30).json()["data"]["activeTargets"]
        # The jobs scraped over https with TLS on and over http before (tls-check exists only with TLS).
        secured_jobs = sorted({t["labels"]["job"] for t in active if t["scrapeUrl"].startswith("https://")
                               and (jobs is None or t["labels"]["job"] in jobs)})
        rows = []
        for job in secured_jobs:
            # The probes' job: the probe alone, https against http (see the docstring).
            metric = "probe_duration_seconds" if job == PROBE_JOB else "scrape_duration_seconds"
            plain = quantiles(prometheus, metric, job, plain_start, plain_end)
            tls = quantiles(prometheus, metric, job, tls_start, tls_end)
            for plain_instance, tls_instance in target_pairs(Topology.load(LAB_INVENTORY), tls_topology, job):
                if plain_instance in plain and tls_instance in tls:
                    label = f"{job} {tls_instance}" + (" (probe)" if job == PROBE_JOB else "")
                    rows.append((label, plain[plain_instance], tls[tls_instance]))
    finally:
        timed(str(BIN / "pyinfra"), "-y", str(LAB_INVENTORY), "deploys/all.py", *limit)  # the lab's own settings back
    report(rows)


if __name__ == "__main__":
    main()
