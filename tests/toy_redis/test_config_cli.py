"""Configuration file and flags, --check-config, JSON logs, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import RawClient, ToyRedis, free_port


def toy_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toy_redis", *args], capture_output=True, text=True, timeout=20)


GOOD = """\
bind: 127.0.0.1
port: 6380
maxclients: 100
maxmemory: 104857600
maxmemory_policy: allkeys-lru
appendonly: false
appendfsync: everysec
metrics_port: 9121
log_level: info
slowlog_log_slower_than_us: 5000
slowlog_max_len: 64
"""


def test_check_config_accepts_a_valid_file(tmp_path):
    path = tmp_path / "toy-redis.yaml"
    path.write_text(GOOD)
    result = toy_cli("--check-config", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        ("port: 70000\n", "port: expected an integer in 0..65535, got 70000"),
        ("port: '6379'\n", "port: expected an integer in 0..65535, got '6379'"),
        ("maxmemory_policy: lru\n", "maxmemory_policy: expected one of noeviction, allkeys-lru, volatile-ttl, got 'lru'"),
        ("appendfsync: sometimes\n", "appendfsync: expected one of always, everysec, no, got 'sometimes'"),
        ("appendonly: yes please\n", "appendonly: expected true or false, got 'yes please'"),
        ("bind: localhost\n", "bind: expected an IP address, got 'localhost'"),
        ("maxmemory: -1\n", "maxmemory: expected an integer in 0.."),
        ("colour: blue\n", "colour: unknown key"),
        ("port: [1\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping of settings, got list"),
        ("requirepass_file: /nonexistent/pw\n", "requirepass_file: cannot read /nonexistent/pw (No such file or directory)"),
        ("appendonly: true\ndir: /nonexistent/dir\n", "dir: expected an existing directory"),
    ],
)
def test_check_config_names_the_bad_key_in_one_line(tmp_path, content, expected):
    path = tmp_path / "toy-redis.yaml"
    path.write_text(content)
    result = toy_cli("--check-config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(str(path) + ": ")
    assert expected in lines[0]


def test_missing_config_file_is_one_line(tmp_path):
    result = toy_cli("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: cannot read file (No such file or directory)"


def test_bad_flag_names_the_flag(tmp_path):
    result = toy_cli("--port", "99999")
    assert result.returncode == 2
    assert result.stderr.strip() == "command line: --port: expected an integer in 0..65535, got 99999"
    result = toy_cli("--maxmemory-policy", "random")
    assert result.returncode == 2 and "--maxmemory-policy: expected one of" in result.stderr
    result = toy_cli("--port", "abc")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_flags_override_the_file(tmp_path):
    port = free_port()
    path = tmp_path / "toy-redis.yaml"
    path.write_text(f"port: {free_port()}\nmetrics_port: 0\nmaxclients: 7\n")
    server = ToyRedis(tmp_path, "--port", str(port), config=path).start()
    try:
        assert server.port == port
        client = server.client()
        assert client.config_get("maxclients") == {"maxclients": "7"}
        client.close()
    finally:
        server.stop()


def test_logs_are_json_lines_and_sighup_reopens_the_file(tmp_path):
    server = ToyRedis(tmp_path, "--slowlog-log-slower-than-us", "0").start()
    try:
        client = server.client()
        client.set("k", "v")
        events = server.events()
        assert all({"ts", "level", "event"} <= set(e) for e in events)
        started = next(e for e in events if e["event"] == "started")
        assert started["port"] == server.port and started["level"] == "info"
        slow = [e for e in events if e["event"] == "slow_command"]
        assert any(e["command"] == "set" and e["duration_us"] >= 0 for e in slow)
        # logrotate: move the file away, then SIGHUP makes toy-redis write to a new file.
        rotated = tmp_path / "toy-redis.log.1"
        os.rename(server.log_file, rotated)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not server.log_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        client.get("k")
        fresh = [json.loads(line) for line in server.log_file.read_text().splitlines()]
        assert fresh[0]["event"] == "log_reopened"
        assert any(e["event"] == "slow_command" and e["command"] == "get" for e in fresh)
        client.close()
    finally:
        assert server.stop() == 0


def test_sigterm_exits_zero(tmp_path):
    server = ToyRedis(tmp_path).start()
    assert server.stop(signal.SIGTERM) == 0
    assert [e["event"] for e in server.events()][-2:] == ["shutdown_requested", "stopped"]


def test_shutdown_command_stops_the_server(tmp_path):
    server = ToyRedis(tmp_path).start()
    client = RawClient(server.port)
    client.send(client.command("SHUTDOWN", "NOSAVE"))
    assert client.read_until_closed() == b""
    client.close()
    assert server.process.wait(10) == 0


def test_unwritable_log_file_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "toy-redis.log").mkdir()  # a directory where the file should be: cannot be opened
    result = toy_cli("--port", str(free_port()), "--metrics-port", "0", "--log-file", str(locked / "toy-redis.log"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"command line: log_file: cannot open {locked / 'toy-redis.log'} (Is a directory)"
