#!/usr/bin/env python3
"""What TLS costs toy-redis, against what it costs Debian's redis-server, measured in the same run
(issue 13, item 3).

Both servers listen on a plain port and a TLS port at once (a throwaway CA and server certificate,
clients need no certificate, no password), and redis-benchmark (Debian's, built with --tls) drives
each of the four listeners in turn, alternating so drifting machine load hits all of them: SET and
GET with 50 clients without pipelining and with -P 16, best of 3, and new connections per second
(`-k 0`: one PING per connection, so each costs a TCP connect and, over TLS, a handshake).

Printed: requests per second of each, and the ratios TLS/plain for each server and toy-redis/
redis-server over TLS.

Run from the repo root: .venv/bin/python bench/toy_redis_tls.py [--requests N]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from toy_redis_common import Server, free_port, ratio, toy_event_loop  # noqa: E402

from tests.toy_redis.certs import Authority  # noqa: E402

ROUNDS = 3


def benchmark(port: int, tls: bool, ca: Path, test: str, requests: int, pipeline: int, keepalive: bool = True) -> float:
    command = ["redis-benchmark", "-p", str(port), "-t", test, "-n", str(requests), "-c", "50", "-P", str(pipeline),
               "--csv"]
    if tls:
        command += ["--tls", "--cacert", str(ca)]
    if not keepalive:
        command += ["-k", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"bench: redis-benchmark failed: {result.stderr[-2000:]}")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    values = [float(row[1]) for row in rows[1:] if len(row) > 1]
    if not values:
        sys.exit(f"bench: redis-benchmark printed no result: {result.stdout[-500:]} {result.stderr[-500:]}")
    return values[0]


def start_servers(workdir: Path, authority: Authority) -> tuple[Server, Server, int, int]:
    """(redis-server, toy-redis, redis-server's TLS port, toy-redis's TLS port)."""
    cert = authority.issue("server", "localhost", server=True)
    redis_port, redis_tls, toy_port, toy_tls = free_port(), free_port(), free_port(), free_port()
    tls_settings = ["--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key),
                    "--tls-ca-cert-file", str(authority.pair.cert), "--tls-auth-clients", "no"]
    redis = Server(
        "redis-server",
        ["redis-server", "--port", str(redis_port), "--tls-port", str(redis_tls), *tls_settings, "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--databases", "1", "--daemonize", "no",
         "--logfile", str(workdir / "redis.log")],
        redis_port, workdir,
    )
    toy = Server(
        "toy-redis",
        [sys.executable, "-m", "toy_redis", "--port", str(toy_port), "--tls-port", str(toy_tls), *tls_settings,
         "--metrics-port", "0", "--log-file", str(workdir / "toy-redis.log")],
        toy_port, workdir,
    )
    return redis, toy, redis_tls, toy_tls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000, help="per redis-benchmark run without pipelining")
    args = parser.parse_args()
    if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
        sys.exit("bench: needs Debian's redis-server and redis-tools (apt-get install redis-server redis-tools)")
    workdir = Path(tempfile.mkdtemp(prefix="toy-redis-tls-bench-"))
    authority = Authority(workdir / "pki")
    redis, toy, redis_tls, toy_tls = start_servers(workdir, authority)
    listeners = {
        ("redis-server", False): redis.port, ("redis-server", True): redis_tls,
        ("toy-redis", False): toy.port, ("toy-redis", True): toy_tls,
    }
    ca = authority.pair.cert
    try:
        print(f"toy-redis event loop: {toy_event_loop(workdir)}; redis-benchmark, 50 clients, best of {ROUNDS}\n")
        print(f"  {'test':<22}{'redis plain':>12}{'redis TLS':>11}{'toy plain':>11}{'toy TLS':>9}"
              f"{'redis TLS/plain':>17}{'toy TLS/plain':>15}{'toy/redis TLS':>15}")
        cases = [(test, pipeline, True) for pipeline in (1, 16) for test in ("SET", "GET")]
        cases.append(("PING_INLINE", 1, False))
        for test, pipeline, keepalive in cases:
            count = args.requests * (8 if pipeline > 1 else 1) // (1 if keepalive else 5)
            best = {key: 0.0 for key in listeners}
            for _ in range(ROUNDS):
                for (name, tls), port in listeners.items():
                    rps = benchmark(port, tls, ca, test.lower() if keepalive else "ping_inline", count, pipeline,
                                    keepalive)
                    best[name, tls] = max(best[name, tls], rps)
            label = f"{test} -P {pipeline}" if keepalive else "new connections/s"
            rp, rt = best["redis-server", False], best["redis-server", True]
            tp, tt = best["toy-redis", False], best["toy-redis", True]
            print(f"  {label:<22}{rp:>12,.0f}{rt:>11,.0f}{tp:>11,.0f}{tt:>9,.0f}"
                  f"{ratio(rt, rp):>17}{ratio(tt, tp):>15}{ratio(tt, rt):>15}")
    finally:
        redis.stop()
        toy.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
