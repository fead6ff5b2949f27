#!/usr/bin/env python3
"""What `homelab profile` costs the service it profiles (issue 16): toy-redis's requests per second
under redis-benchmark with py-spy recording it at 100 samples a second (as `homelab profile` runs it,
default mode: py-spy pauses the process for each sample), against the same toy-redis with no
profiler, measured in the same run, alternating, best of 3 each. Target: at least 0.9x.

Run from the repo root: .venv/bin/python bench/profile_bench.py [--requests N] [--rate HZ]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_redis_common import Server, free_port, ratio, stop_process  # noqa: E402
from toy_redis_tls import benchmark  # noqa: E402

ROUNDS = 3
TESTS = ("set", "get")


def rps(port: int, requests: int) -> dict[str, float]:
    return {test: benchmark(port, False, Path(), test, requests, 1) for test in TESTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None or shutil.which("redis-benchmark") is None:
        sys.exit("bench: needs py-spy in this venv (./dev setup) and redis-benchmark (apt-get install redis-tools)")
    workdir = Path(tempfile.mkdtemp(prefix="profile-bench-"))
    port = free_port()
    toy = Server("toy-redis", [sys.executable, "-m", "toy_redis", "--port", str(port), "--metrics-port", "0",
                               "--log-file", str(workdir / "toy-redis.log")], port, workdir)
    samples: list[int] = []
    best = {"off": dict.fromkeys(TESTS, 0.0), "py-spy": dict.fromkeys(TESTS, 0.0)}
    try:
        for round_number in range(ROUNDS * 2):
            # Alternating which goes first, so a warming or drifting machine favours neither.
            if (round_number % 2 == 0) == (round_number // 2 % 2 == 0):
                for test, value in rps(port, args.requests).items():
                    best["off"][test] = max(best["off"][test], value)
                continue
            recorder = subprocess.Popen([py_spy, "record", "--pid", str(toy.process.pid), "--rate", str(args.rate),
                                         "--format", "speedscope", "--output", str(workdir / "profile.json")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for test, value in rps(port, args.requests).items():
                    best["py-spy"][test] = max(best["py-spy"][test], value)
            finally:
                stop_process(recorder, 10, signal.SIGINT)  # SIGINT: py-spy writes its file and exits
            # Otherwise "with py-spy" could be a run py-spy never attached to.
            document = json.loads((workdir / "profile.json").read_text())
            samples.append(sum(len(profile["samples"]) for profile in document["profiles"]))
    finally:
        toy.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"py-spy took {', '.join(map(str, samples))} samples in its {len(samples)} recordings")
    for test in TESTS:
        print(f"{test.upper()}: {best['off'][test]:.0f} rps without a profiler, {best['py-spy'][test]:.0f} with py-spy "
              f"at {args.rate} Hz: {ratio(best['py-spy'][test], best['off'][test])} (target >= 0.9x)")


if __name__ == "__main__":
    main()
