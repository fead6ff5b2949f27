"""Debian's redis-cli and redis-benchmark work against toy-redis unchanged."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None,
    reason="needs Debian's redis-tools (apt-get install redis-tools)",
)


def cli(toy, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["redis-cli", "-p", str(toy.port), *args], input=stdin, capture_output=True, text=True, timeout=30)


def test_redis_cli_commands(r, toy):
    assert cli(toy, "SET", "greeting", "hello world").stdout == "OK\n"
    assert cli(toy, "GET", "greeting").stdout == "hello world\n"
    assert cli(toy, "--no-raw", "GET", "missing").stdout == "(nil)\n"
    assert cli(toy, "--no-raw", "INCR", "n").stdout == "(integer) 1\n"
    assert cli(toy, "--no-raw", "NOPE").stdout.startswith("(error) ERR unknown command 'NOPE'")
    assert "redis_version:7.0.15" in cli(toy, "INFO", "server").stdout
    assert cli(toy, "PING").stdout == "PONG\n"


def test_redis_cli_scan_and_pipe(r, toy):
    r.mset({f"user:{i}": i for i in range(500)})
    keys = cli(toy, "--scan", "--pattern", "user:*").stdout.split()
    assert sorted(keys) == sorted(f"user:{i}" for i in range(500))
    protocol = "".join(f"*3\r\n$3\r\nSET\r\n${len(f'p{i}')}\r\np{i}\r\n$1\r\nv\r\n" for i in range(1000))
    result = cli(toy, "--pipe", stdin=protocol)
    assert result.returncode == 0, result.stderr
    assert "errors: 0, replies: 1000" in result.stdout
    assert r.dbsize() == 1500


def test_redis_cli_interactive_session(r, toy):
    result = cli(toy, stdin="SET a 1\nGET a\nHELLO 3\nGET nothing\n")
    assert result.stdout.split("\n")[:2] == ["OK", "1"]


def test_redis_cli_bigkeys(r, toy):
    r.mset({"a": "1", "bb": "22"})
    result = cli(toy, "--bigkeys")
    assert result.returncode == 0, result.stderr
    assert "Biggest string found '\"bb\"' has 2 bytes" in result.stdout
    assert "2 strings with 3 bytes" in result.stdout


def test_redis_benchmark_runs_unchanged(toy):
    result = subprocess.run(
        ["redis-benchmark", "-p", str(toy.port), "-t", "set,get,incr", "-n", "3000", "-c", "20", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.replace("\r", "\n").splitlines() if "requests per second" in line]
    assert [line.split(":")[0] for line in lines] == ["SET", "GET", "INCR"]
    pipelined = subprocess.run(
        ["redis-benchmark", "-p", str(toy.port), "-t", "get", "-n", "3000", "-c", "10", "-P", "16", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert pipelined.returncode == 0 and "GET:" in pipelined.stdout
