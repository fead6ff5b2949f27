#!/usr/bin/env python3
"""`homelab backup` of the deployed 4-node lab holding 1M toy-redis keys and a day of Prometheus data.

Setup (not timed): this checkout is deployed to the toy-redis and Prometheus nodes; toy-redis gets --keys keys (pipelined MSETs); Prometheus gets a day of
--series series at its scrape interval, made with `promtool tsdb create-blocks-from openmetrics`
on this machine and moved into its TSDB (Prometheus loads new blocks at its next reload).
Then the backup is timed, and as the reference in the same run the raw copy of the same bytes over
the same SSH connections (cat of the AOF, tar of the TSDB folder), so the ratio shows what the
consistency steps (BGREWRITEAOF, the snapshot, the manifest's sha256) cost over moving the data.
Target (issue 14): the backup in under 60 s. Afterwards the keys, the series and the backup folder
are removed.

Run as root with the lab deployed, under the lab lock:
    flock /tmp/homelab-lab.lock .venv/bin/python bench/backup_bench.py [--keys 1000000] [--series 200]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from homelab.backup import run  # noqa: E402
from homelab.backup.parts import ToyRedis  # noqa: E402
from homelab.topology import Topology  # noqa: E402
from homelab.types import seconds  # noqa: E402
from roles.prometheus import STORAGE_PATH  # noqa: E402
from roles.toy_redis import DATA_DIR  # noqa: E402

INVENTORY = REPO / "inventory" / "lab.py"
PREFIX = "bench-backup"
METRIC = "homelab_backup_bench_value"
BATCH = 10_000
DAY_S = 86400


def deploy(hosts: list[str]) -> None:
    """This checkout's roles on ``hosts`` (Prometheus needs its admin API on: other checkouts may have
    deployed without it)."""
    limits = [arg for host in hosts for arg in ("--limit", host)]
    result = subprocess.run([str(Path(sys.executable).with_name("pyinfra")), "-y", str(INVENTORY), "deploys/all.py",
                             *limits], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"deploy of {', '.join(hosts)} failed:\n{(result.stderr + result.stdout)[-3000:]}")


def load_keys(topology: Topology, host: str, keys: int) -> float:
    started = time.monotonic()
    with ToyRedis().client(topology, host) as client:
        for start in range(0, keys, BATCH):
            client.mset({f"{PREFIX}:{n:08d}": f"value-{n:08d}-{'x' * 40}" for n in range(start, min(keys, start + BATCH))})
    return time.monotonic() - started


def drop_keys(topology: Topology, host: str) -> None:
    with ToyRedis().client(topology, host) as client:
        batch = []
        for key in client.scan_iter(f"{PREFIX}:*", count=BATCH):
            batch.append(key)
            if len(batch) >= BATCH:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)


def backfill(topology: Topology, remotes: run.Remotes, host: str, series: int, workdir: Path) -> int:
    """A day of samples ending 4h ago (clear of the head block), as blocks moved into the TSDB; samples."""
    step = int(seconds(topology.settings(host, "prometheus").scrape_interval))
    end = int(time.time()) - 4 * 3600
    start = end - DAY_S
    text = workdir / "day.om"
    count = 0
    with open(text, "w") as out:
        out.write(f"# TYPE {METRIC} gauge\n")
        for number in range(series):
            for moment in range(start, end, step):
                out.write(f'{METRIC}{{series="{number}"}} {(moment // step + number) % 1000} {moment}\n')
                count += 1
        out.write("# EOF\n")
    blocks = workdir / "blocks"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text), str(blocks)],
                   check=True, capture_output=True)
    node = remotes(host)
    node.send_tree(blocks, STORAGE_PATH)
    node.run(f"chown -R prometheus:prometheus {STORAGE_PATH}")
    prometheus = topology.access("prometheus", host)
    # Prometheus opens blocks that appear in its folder at its next compaction cycle (each minute).
    deadline = time.monotonic() + 180
    query = f"count(count_over_time({METRIC}[1d]))"
    while time.monotonic() < deadline:
        result = prometheus.get("/api/v1/query", params={"query": query, "time": end}, timeout=30).json()
        if result["data"]["result"] and int(result["data"]["result"][0]["value"][1]) == series:
            return count
        time.sleep(3)
    raise SystemExit(f"Prometheus did not load the backfilled blocks in 180s ({query})")


def drop_series(topology: Topology, host: str) -> None:
    prometheus = topology.access("prometheus", host)
    prometheus.request("POST", "/api/v1/admin/tsdb/delete_series", params={"match[]": METRIC}, timeout=120)
    prometheus.request("POST", "/api/v1/admin/tsdb/clean_tombstones", timeout=300)


def raw_copy(remotes: run.Remotes, redis_host: str, prometheus_host: str, workdir: Path) -> float:
    """The same bytes over the same connections, with no consistency step: the reference."""
    started = time.monotonic()
    remotes(redis_host).read_to(f"cat {DATA_DIR}/appendonly.aof", workdir / "raw.aof")
    remotes(prometheus_host).fetch_tree(STORAGE_PATH, ["."], workdir / "raw-tsdb")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=200, help="series backfilled over a day")
    args = parser.parse_args()
    topology = Topology.load(INVENTORY)
    redis_host = topology.hosts_of("toy_redis")[0]
    prometheus_host = topology.hosts_of("prometheus")[0]
    deploy(sorted({redis_host, prometheus_host}))
    workdir = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    try:
        with run.remotes(topology) as remotes:
            print(f"setup: {args.keys} keys in {load_keys(topology, redis_host, args.keys):.1f}s; "
                  f"{backfill(topology, remotes, prometheus_host, args.series, workdir)} samples backfilled")
            outcome = run.backup(topology, str(INVENTORY), workdir / "backups", lambda line: None)
            reference = raw_copy(remotes, redis_host, prometheus_host, workdir)
            by_part: dict[str, int] = {}
            for name, entry in outcome.manifest.files.items():
                part = "/".join(name.split("/")[:2])
                by_part[part] = by_part.get(part, 0) + entry["size"]
            for part, size in sorted(by_part.items()):
                print(f"  {part}: {size / 2**20:.1f} MiB")
            print(f"backup: {outcome.seconds:.1f}s for {outcome.size / 2**20:.1f} MiB in {len(outcome.manifest.files)} files "
                  f"({'under' if outcome.seconds < 60 else 'OVER'} the 60 s target)")
            print(f"reference, raw copy of the AOF and the TSDB folder: {reference:.1f}s; "
                  f"backup/raw = {outcome.seconds / reference:.2f}x")
        return 0 if outcome.seconds < 60 else 1
    finally:
        drop_keys(topology, redis_host)
        drop_series(topology, prometheus_host)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
