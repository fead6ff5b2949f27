"""A real toy-redis process (and a real redis-server to compare with) on loopback for each test module.

The benches under bench/ start and stop their servers and frame requests with the same helpers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hiredis
import pytest
import redis

from tests.loopback import free_port

START_TIMEOUT_S = 10
START_ATTEMPTS = 3


class PortTaken(Exception):
    """The free port picked for a server was taken before it could bind it."""


class ToyRedis:
    """`python -m toy_redis` on free loopback ports (a RESP port it is given, as `port: 0` turns the
    listener off as in Redis; the metrics port it picks); ports are read from its "started" log line."""

    def __init__(self, workdir: Path, *flags: str, config: Path | None = None, env: dict | None = None):
        self.workdir = workdir
        self.log_file = workdir / "toy-redis.log"
        self.flags = list(flags)
        self.config = config
        self.env = env
        self.process: subprocess.Popen | None = None
        self.port = self.metrics_port = self.tls_port = 0

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "toy_redis", "--log-file", str(self.log_file)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if "--port" not in self.flags and self.config is None:
            cmd += ["--port", str(free_port())]
        if "--metrics-port" not in self.flags and self.config is None:
            cmd += ["--metrics-port", "0"]
        return cmd + self.flags

    def start(self) -> "ToyRedis":
        # Another process may take the free port between free_port() and the server's bind.
        for _ in range(START_ATTEMPTS - 1):
            try:
                return self._start()
            except PortTaken:
                pass
        return self._start()

    def _start(self) -> "ToyRedis":
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = subprocess.Popen(
            self.command(), cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.events(offset):
                if event["event"] == "started":
                    self.port, self.metrics_port = event["port"], event["metrics_port"]
                    self.tls_port = event["tls_port"]
                    return self
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                if b"address already in use" in err.lower():
                    raise PortTaken(err.decode())
                raise RuntimeError(f"toy-redis exited with {self.process.returncode}: {err.decode()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("toy-redis did not log 'started' in time")

    def restart(self, sig: int = signal.SIGTERM) -> "ToyRedis":
        """Stop (with ``sig``: SIGKILL for a crash) and start again on the same files."""
        self.stop(sig)
        return self.start()

    def events(self, offset: int = 0) -> list[dict]:
        if not self.log_file.exists():
            return []
        with open(self.log_file, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        return stop_process(self.process, timeout, sig) if self.process else None


def stop_process(process: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Signal ``process`` (unless it has exited), killing it if it outlasts ``timeout``; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def redis_server_command(port: int, workdir: Path, config_file: Path | None = None) -> list[str]:
    """Debian's redis-server set up like toy-redis: loopback, one database, no persistence (and
    ``config_file``'s lines, which redis-server takes only as its first argument)."""
    return ["redis-server", *([str(config_file)] if config_file else []), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--databases", "1", "--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "redis.log")]


def encode(*args) -> bytes:
    """A RESP request frame of ``args`` (bytes as they are, anything else as its str)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def answer_until_closed(port: int, data: bytes) -> bytes:
    """Everything the server sends on a fresh connection after ``data``, until it closes the connection."""
    client = RawClient(port)
    try:
        client.send(data)
        return client.read_until_closed()
    finally:
        client.close()


def assert_same_replies(run, scenario: list[list[str]], redis_port: int, toy_port: int) -> None:
    """``run(port, scenario)`` (each command's reply, normalized) gives the same on both servers."""
    expected, got = run(redis_port, scenario), run(toy_port, scenario)
    for command, want, have in zip(scenario, expected, got):
        assert have == want, f"{command}: redis-server replied {want!r}, toy-redis {have!r}"


class RealRedis:
    """Debian's redis-server on a free loopback port, set up like toy-redis: one database, no persistence."""

    def __init__(self, workdir: Path, config: str = "", password: str | None = None):
        """`config`: more redis.conf lines, given in a file as the password is (never on a command line)."""
        self.port = free_port()
        self.config = workdir / "redis.conf"
        self.config.write_text(config + (f"\nrequirepass {password}\n" if password else ""))
        self.config.chmod(0o600)
        self.process = subprocess.Popen(redis_server_command(self.port, workdir, self.config),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                redis.Redis(port=self.port, password=password, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **kwargs)

    def stop(self) -> None:
        stop_process(self.process, 10)


class RawClient:
    """Sends exact bytes and reads whole replies (framed by hiredis), for protocol-level tests."""

    def __init__(self, port: int, timeout: float = 5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = hiredis.Reader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    command = staticmethod(encode)

    def call(self, *args):
        self.send(self.command(*args))
        return self.read()

    def read(self):
        while True:
            reply = self.reader.gets()
            if reply is not False:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by server")
            self.reader.feed(data)

    def read_until_closed(self, timeout: float = 5) -> bytes:
        self.sock.settimeout(timeout)
        chunks = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    server = ToyRedis(tmp_path_factory.mktemp("toy-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def r(toy):
    client = toy.client()
    client.flushall()
    yield client
    client.close()


needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs Debian's redis-server to compare with (apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("needs Debian's redis-server to compare with (apt-get install redis-server)")
    server = RealRedis(tmp_path_factory.mktemp("redis-server"))
    yield server
    server.stop()
