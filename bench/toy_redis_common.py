"""Shared by the toy-redis benches: start toy-redis and Debian's redis-server side by side on
free loopback ports, load keys fast, read a process's RSS and CPU time. Processes, ports and RESP
frames are handled as the tests handle them (tests/toy_redis/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loopback import free_port  # noqa: E402,F401 (the benches import it from here)
from tests.toy_redis.conftest import encode, redis_server_command, stop_process  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 15


def answers_ping(port: int, timeout: float = START_TIMEOUT_S, process: subprocess.Popen | None = None) -> bool:
    """Whether a server answers PING on ``port`` within ``timeout`` (False as soon as ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(port) as client:
                if client.call("PING") == b"PONG":
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            return False
        time.sleep(0.05)


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def scheduled_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``'s threads alive now, in seconds, counted in nanoseconds by the scheduler
    (/proc/PID/task/*/schedstat), for stretches too short for /proc/PID/stat's clock ticks."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return total_ns / 1e9


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, workdir: Path):
        self.name, self.port, self.workdir = name, port, workdir
        self.process = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not answers_ping(port, process=self.process):
            self.stop()
            sys.exit(f"bench: {name} did not start ({' '.join(cmd)})")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process, 20)


def start_pair(extra_toy_flags: tuple[str, ...] = ()) -> tuple[Server, Server]:
    """(redis-server, toy-redis), both without persistence, one database."""
    if shutil.which("redis-server") is None:
        sys.exit("bench: needs Debian's redis-server and redis-tools (apt-get install redis-server redis-tools)")
    workdir = Path(tempfile.mkdtemp(prefix="toy-redis-bench-"))
    redis_port, toy_port = free_port(), free_port()
    redis = Server("redis-server", redis_server_command(redis_port, workdir), redis_port, workdir)
    toy = Server(
        "toy-redis",
        [sys.executable, "-m", "toy_redis", "--port", str(toy_port), "--metrics-port", "0",
         "--log-file", str(workdir / "toy-redis.log"), *extra_toy_flags],
        toy_port, workdir,
    )
    return redis, toy


def toy_event_loop(workdir: Path) -> str:
    for line in (workdir / "toy-redis.log").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "started":
            return event.get("loop", "?")
    return "?"


class Client:
    """A minimal RESP client (hiredis framing) for loading and polling without client overhead."""

    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = hiredis.Reader()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    encode = staticmethod(encode)

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.read(1)[0]

    def read(self, count: int) -> list:
        replies = []
        while len(replies) < count:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.reader.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"server error: {reply}")
            replies.append(reply)
        return replies

    def pipeline(self, frames: list[bytes]) -> None:
        """Send frames in batches, reading the replies of each batch (bounded memory both sides)."""
        batch = 10_000
        for start in range(0, len(frames), batch):
            chunk = frames[start : start + batch]
            self.sock.sendall(b"".join(chunk))
            self.read(len(chunk))


def load_keys(port: int, count: int, key_size: int = 16, value_size: int = 32, pxat: int | None = None,
              prefix: bytes = b"k") -> None:
    value = b"v" * value_size
    width = key_size - len(prefix)
    with Client(port) as client:
        for start in range(0, count, 100_000):
            frames = []
            for i in range(start, min(count, start + 100_000)):
                key = prefix + b"%0*d" % (width, i)
                frames.append(Client.encode(b"SET", key, value) if pxat is None else
                              Client.encode(b"SET", key, value, b"PXAT", pxat))
            client.pipeline(frames)


def ratio(ours: float, reference: float) -> str:
    return f"{ours / reference:.2f}x" if reference else "n/a"


# Two arms compared on a 2-core box (profile_bench, container_bench): the server on one core and
# redis-benchmark on the other, so neither takes the other's CPU (unpinned, the scheduler moved them
# about and ratios swung ±30% within a run); few clients, so one core of redis-benchmark keeps the
# server busy without queueing behind itself. Both arms run pinned the same way.
SERVER_CPU = 0
CLIENT_CPU = 1
PINNED_CLIENTS = 8
# Upper over lower quartile of the per-round ratios beyond which a run's median judges nothing.
MAX_SPREAD = 1.25


def pin(pid: int, cpu: int = SERVER_CPU) -> None:
    """Every thread of process ``pid`` (and those it starts later) onto ``cpu``."""
    if (os.cpu_count() or 1) <= max(SERVER_CPU, CLIENT_CPU):
        sys.exit(f"bench: needs cores {SERVER_CPU} and {CLIENT_CPU} (server and load generator apart)")
    subprocess.run(["taskset", "--all-tasks", "--cpu-list", "--pid", str(cpu), str(pid)], check=True,
                   capture_output=True)


def pinned_benchmark(port: int, test: str, requests: int, clients: int = PINNED_CLIENTS) -> float:
    """redis-benchmark's requests per second for ``test`` (SET, GET), run on CLIENT_CPU."""
    result = subprocess.run(
        ["taskset", "--cpu-list", str(CLIENT_CPU), "redis-benchmark", "-p", str(port), "-t", test.lower(),
         "-n", str(requests), "-c", str(clients), "--csv"],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        sys.exit(f"bench: redis-benchmark failed: {result.stderr[-2000:]}")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    return {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}[test.upper()]


def rotated_rounds(arms: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Each round runs every arm once, back to back, the first arm rotating from round to round,
    so a warming or drifting machine favours none; each arm's results, round by round."""
    names = list(arms)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for round_number in range(rounds):
        for name in names[round_number % len(names):] + names[:round_number % len(names)]:
            results[name].append(arms[name]())
    return results


def paired_ratio(ours: list[float], reference: list[float]) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile) of the per-round ratios ours/reference: each ratio
    compares two runs a few seconds apart, so the machine's slow drift cancels out of it; quartiles
    rather than extremes, since one round in which other work landed on a core says nothing."""
    ratios = [mine / theirs for mine, theirs in zip(ours, reference, strict=True)]
    lower, median, upper = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, lower, upper


def ratio_verdict(ours: list[float], reference: list[float], target: float) -> str:
    """'0.97x (quartiles 0.91-1.02 of 15 rounds) target >= 0.95x: met', judged on the median; when the
    quartiles lie more than MAX_SPREAD apart (other work on the machine moved the rounds), no verdict."""
    median, lower, upper = paired_ratio(ours, reference)
    verdict = (f"not judgeable here: quartiles more than {MAX_SPREAD}x apart" if upper > MAX_SPREAD * lower
               else "met" if median >= target else "MISSED")
    return f"{median:.2f}x (quartiles {lower:.2f}-{upper:.2f} of {len(ours)} rounds) target >= {target}x: {verdict}"
