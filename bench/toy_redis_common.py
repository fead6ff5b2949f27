"""Shared by the toy-redis benches: start toy-redis and Debian's redis-server side by side on
free loopback ports, load keys fast, read a process's RSS and CPU time. Processes, ports and RESP
frames are handled as the tests handle them (tests/toy_redis/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
