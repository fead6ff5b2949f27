#!/usr/bin/env python3
"""What profiling costs the service it profiles (issue 16): toy-redis's requests per second under
redis-benchmark
- with py-spy recording it at 100 samples a second, with the options `homelab profile` gives it
  (homelab.profiling.py_spy_options: --nonblocking); target: at least 0.9x;
- with continuous profiling on (profiling_hz, the in-process sampler of src/pprof_sampler, at its
  highest rate unless --sampler-hz says otherwise); target: at least 0.95x;
each against a toy-redis with no profiler, measured in the same run. The servers run on one core and
redis-benchmark (few clients) on the other (toy_redis_common.pin); py-spy runs on the server's core,
the worst case of a node (whose kernel would put it on an idle core if it had one: there it would
cost the service nothing but memory reads). Each round measures every arm back to back, the first
arm rotating, each arm on a toy-redis started for that round, and a target is judged on the median
of the per-round ratios, printed with their quartiles (no verdict when those lie more than
MAX_SPREAD apart).

Requests per second swing with whatever else runs on the machine; so each target is also judged on
requests per CPU second of the server's core (the server's threads, plus py-spy's for py-spy, from
the scheduler's nanosecond counts): what the arm leaves of a saturated core, the figure a loaded
machine blurs least. Both verdicts must say met. At the end the sampler's own profile is fetched (it
must have seen the benchmark) and py-spy's sample counts are printed, so that "with a profiler"
cannot be a run no profiler watched, with the sampler's own share of the CPU its profile holds.

Run from the repo root: .venv/bin/python bench/profile_bench.py [--requests N] [--rounds N] [--rate HZ] [--sampler-hz HZ]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import requests
from pprof_sampler import MAX_HZ, PATH, WINDOW_S
from pprof_sampler.profile_pb2 import Profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homelab.profiling import MAX_SECONDS, Request, py_spy_options  # noqa: E402

from toy_redis_common import (  # noqa: E402
    CLIENT_CPU,
    PINNED_CLIENTS,
    SERVER_CPU,
    Server,
    free_port,
    pin,
    pinned_benchmark,
    ratio_verdict,
    rotated_rounds,
    scheduled_cpu_seconds,
    stop_process,
)

# Many short rounds: each pair of arms runs seconds apart, so drift cancels from its ratio.
ROUNDS = 25
# py-spy attaching (reading the process's symbols) is not part of what a sample costs.
PY_SPY_START_S = 15
TESTS = ("set", "get")
VARIANTS = ("off", "py-spy", "continuous")
TARGETS = {"py-spy": 0.9, "continuous": 0.95}
USER, PASSWORD = "bench", "bench-password"
LABELS = {"py-spy": lambda args: f"py-spy at {args.rate} Hz",
          "continuous": lambda args: f"continuous profiling at {args.sampler_hz} Hz"}


def rps(port: int, requests_per_test: int) -> dict[str, float]:
    return {test: pinned_benchmark(port, test, requests_per_test) for test in TESTS}


def start_toy(workdir: Path, name: str, *flags: str) -> tuple[Server, int]:
    port = free_port()
    folder = workdir / name
    folder.mkdir()
    server = Server("toy-redis", [sys.executable, "-m", "toy_redis", "--port", str(port), "--metrics-port", "0",
                                  "--log-file", str(folder / "toy-redis.log"), *flags], port, folder)
    pin(server.process.pid)
    return server, port


def metrics_port(server: Server) -> int:
    for line in (server.workdir / "toy-redis.log").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "started":
            return event["metrics_port"]
    sys.exit("bench: the profiled toy-redis logged no start")


def with_py_spy(py_spy: str, pid: int, rate: int, output: Path, run) -> tuple[int, float]:
    """run() while py-spy, started as `homelab profile` starts it, records process ``pid``, once it
    has attached; (the samples py-spy took, the CPU seconds it used during run())."""
    options = py_spy_options(Request("bench", "toy_redis", MAX_SECONDS, rate))
    log = output.with_suffix(".log")
    with log.open("w") as messages:  # py-spy tells on stdout when it samples
        recorder = subprocess.Popen(["taskset", "--cpu-list", str(SERVER_CPU), py_spy, "record", "--pid", str(pid),
                                     "--output", str(output), *options], stdout=messages, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PY_SPY_START_S
        while "Sampling process" not in log.read_text():
            if recorder.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: py-spy did not start sampling: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        cpu_before = scheduled_cpu_seconds(recorder.pid)  # taskset execs py-spy: the same process
        run()
        cpu_used = scheduled_cpu_seconds(recorder.pid) - cpu_before
    finally:
        stop_process(recorder, 10, signal.SIGINT)  # SIGINT: py-spy writes its file and exits
    document = json.loads(output.read_text())
    return sum(len(profile["samples"]) for profile in document["profiles"]), cpu_used


def cpu_s_by_leaf(profile: Profile) -> dict[str, float]:
    functions = {function.id: profile.string_table[function.name] for function in profile.function}
    leaf_of = {location.id: functions[location.line[0].function_id] for location in profile.location}
    seconds: dict[str, float] = {}
    for sample in profile.sample:
        leaf = leaf_of[sample.location_id[0]]
        seconds[leaf] = seconds.get(leaf, 0.0) + sample.value[1] / 1e9
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--rate", type=int, default=100, help="py-spy's samples a second")
    parser.add_argument("--sampler-hz", type=int, default=MAX_HZ, help="the in-process sampler's profiling_hz")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None or shutil.which("redis-benchmark") is None:
        sys.exit("bench: needs py-spy in this venv (./dev setup) and redis-benchmark (apt-get install redis-tools)")
    workdir = Path(tempfile.mkdtemp(prefix="profile-bench-"))
    users = workdir / "metrics-users.yml"
    users.write_text(f"basic_auth_users:\n  {USER}: '{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}'\n")
    flags = {"off": (), "py-spy": (),
             "continuous": ("--profiling-hz", str(args.sampler_hz), "--metrics-users-file", str(users))}
    # The continuous arm's server of the latest round, kept running to fetch the sampler's profile at the end.
    profiled: list[Server] = []
    samples: list[int] = []
    # Per round: CPU seconds of the server's core per request (the server's threads, plus py-spy's).
    cpu_per_request: dict[str, list[float]] = {variant: [] for variant in VARIANTS}

    def arm(variant: str):
        def run() -> dict[str, float]:
            # A server of its own each round: two processes of the same toy-redis serve a few percent
            # apart (hash seeds, memory layout), and one pair for all rounds judged that as much as the
            # profiler; fresh processes make it one more noise that the median of the rounds evens out.
            rounds_done = len(cpu_per_request[variant])
            server, port = start_toy(workdir, f"{variant}-{rounds_done}", *flags[variant])
            measured = {}

            def measure() -> None:
                cpu_before = scheduled_cpu_seconds(server.process.pid)
                measured.update(rps(port, args.requests))
                measured["cpu_s"] = scheduled_cpu_seconds(server.process.pid) - cpu_before

            try:
                if variant == "py-spy":
                    taken, py_spy_cpu_s = with_py_spy(py_spy, server.process.pid, args.rate,
                                                      workdir / "profile.json", measure)
                    samples.append(taken)
                    measured["cpu_s"] += py_spy_cpu_s
                else:
                    measure()
            finally:
                if variant == "continuous":
                    profiled[:] = [*profiled, server]
                    while len(profiled) > 1:
                        profiled.pop(0).stop()
                else:
                    server.stop()
            cpu_per_request[variant].append(measured["cpu_s"] / (args.requests * len(TESTS)))
            return measured
        return run

    try:
        results = rotated_rounds({variant: arm(variant) for variant in VARIANTS}, args.rounds)
        response = requests.get(f"http://127.0.0.1:{metrics_port(profiled[-1])}{PATH}?seconds={WINDOW_S}",
                                auth=(USER, PASSWORD), timeout=30)
        response.raise_for_status()
        profile = Profile.FromString(gzip.decompress(response.content))
        sampled_s = sum(sample.value[1] for sample in profile.sample) / 1e9
        by_leaf = cpu_s_by_leaf(profile)
        sampler_s = sum(seconds for leaf, seconds in by_leaf.items() if leaf.startswith("Sampler."))
    finally:
        for server in profiled:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    covered_s = profile.duration_nanos / 1e9
    top = sorted(by_leaf.items(), key=lambda item: -item[1])[:3]
    # The handler samples hz times per CPU second of the process: sampled_s x hz samples.
    print(f"py-spy took {', '.join(map(str, samples))} samples in its {len(samples)} recordings; the in-process "
          f"sampler's profile of the last round's server ({covered_s:.0f} s) holds {sampled_s:.1f} s of CPU (on top: "
          f"{', '.join(f'{leaf} {seconds / sampled_s:.0%}' for leaf, seconds in top)}), {sampler_s / sampled_s:.1%} "
          f"of it the sampler's own: {sampler_s / (sampled_s * args.sampler_hz) * 1e6:.0f} us per sample")
    print(f"redis-benchmark, {PINNED_CLIENTS} clients on core {CLIENT_CPU}, servers on core {SERVER_CPU}, "
          f"{args.requests} requests per test, {args.rounds} rounds (rps: median; ratio: median and "
          f"quartiles of the rounds' ratios)")
    for test in TESTS:
        off = [measured[test] for measured in results["off"]]
        print(f"{test.upper()}: {statistics.median(off):.0f} rps without a profiler")
        for variant, label in LABELS.items():
            ours = [measured[test] for measured in results[variant]]
            print(f"  {label(args)}: {statistics.median(ours):.0f} rps, {ratio_verdict(ours, off, TARGETS[variant])}")
    off = [1 / seconds for seconds in cpu_per_request["off"]]
    print(f"SET and GET, requests per CPU second of the server's core: {statistics.median(off):.0f} without a profiler")
    for variant, label in LABELS.items():
        ours = [1 / seconds for seconds in cpu_per_request[variant]]
        print(f"  {label(args)}{' (its CPU counted)' if variant == 'py-spy' else ''}: {statistics.median(ours):.0f}, "
              f"{ratio_verdict(ours, off, TARGETS[variant])}")


if __name__ == "__main__":
    main()
