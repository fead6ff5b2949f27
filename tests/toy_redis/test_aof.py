"""Append-only persistence: restart restores data and absolute TTLs, torn tails, rewrite, fsync modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.loopback import wait_for

from .conftest import RawClient, ToyRedis, encode


@pytest.fixture
def aof_server():
    """Makes toy-redis servers with appendonly on in a directory; all are stopped after the test."""
    made = []

    def make(workdir, *flags):
        server = ToyRedis(workdir, "--appendonly", "yes", "--dir", str(workdir), *flags)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def written_and_stopped(server: ToyRedis, count: int) -> Path:
    """Start ``server``, SET k0..k<count-1>, stop it; its append-only file."""
    server.start()
    with server.client() as client:
        for i in range(count):
            client.set(f"k{i}", i)
    server.stop()
    return server.workdir / "appendonly.aof"


def test_restart_restores_data_and_ttls(tmp_path, aof_server):
    server = aof_server(tmp_path).start()
    client = server.client()
    client.set("plain", "v1")
    client.set("ttl", "v2", ex=1000)
    client.incrby("counter", 41)
    client.incr("counter")
    client.append("plain", "+more")
    client.mset({"a": "1", "b": "2", "gone": "x"})
    client.delete("gone")
    client.rename("a", "renamed")
    client.set("persisted", "p", ex=100)
    client.persist("persisted")
    client.set("short", "s", px=300)
    expire_at = client.pexpiretime("ttl")
    client.close()
    assert server.stop() == 0
    time.sleep(0.5)  # "short" expires while the server is down

    server.start()
    client = server.client()
    assert client.get("plain") == b"v1+more"
    assert client.get("counter") == b"42"
    assert client.get("renamed") == b"1" and client.get("a") is None
    assert client.get("b") == b"2" and client.get("gone") is None
    assert client.pexpiretime("ttl") == expire_at
    assert client.ttl("persisted") == -1
    assert client.get("short") is None
    assert client.dbsize() == 6
    client.flushall()
    client.set("after-flush", "1")
    client.close()
    server.restart()
    with server.client() as client:
        assert client.keys("*") == [b"after-flush"]


@pytest.mark.parametrize("tail", [b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhal", b"\x00" * 100_000, b"*2\r\n$3"])
def test_torn_last_record_is_logged_cut_and_skipped(tmp_path, tail, aof_server):
    server = aof_server(tmp_path)
    path = written_and_stopped(server, 100)
    good_size = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(tail)

    server.start()
    client = server.client()
    assert client.dbsize() == 100 and client.get("k99") == b"99"
    truncated = [e for e in server.events() if e["event"] == "aof_truncated"]
    assert truncated and truncated[-1]["valid_bytes"] == good_size and truncated[-1]["level"] == "warning"
    assert path.stat().st_size == good_size
    client.set("new", "1")
    client.close()
    server.stop()
    server.start()
    client = server.client()
    assert client.get("new") == b"1" and client.dbsize() == 101
    client.close()
    server.stop()


def test_damage_before_the_end_refuses_to_start_with_one_line(tmp_path, aof_server):
    server = aof_server(tmp_path)
    path = written_and_stopped(server, 10)
    data = bytearray(path.read_bytes())
    data[40:44] = b"!!!!"
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="exited with 1") as failure:
        server.start()
    message = str(failure.value).split(": ", 1)[1].strip()
    assert len(message.splitlines()) == 1
    assert f"{path}: bad record at byte " in message


def test_appendfsync_always_survives_kill_9(tmp_path, aof_server):
    server = aof_server(tmp_path, "--appendfsync", "always").start()
    with server.client() as client:
        for i in range(200):
            client.set(f"k{i}", i)
    server.restart(signal.SIGKILL)
    with server.client() as client:
        assert client.dbsize() == 200


def test_everysec_loses_at_most_about_a_second(tmp_path, aof_server):
    server = aof_server(tmp_path, "--appendfsync", "everysec").start()
    with server.client() as client:
        client.set("early", "1")
        time.sleep(1.5)
    server.restart(signal.SIGKILL)
    with server.client() as client:
        assert client.get("early") == b"1"


def test_background_rewrite_compacts_the_file_while_serving(tmp_path, aof_server):
    server = aof_server(tmp_path).start()
    client = server.client()
    client.config_set("auto-aof-rewrite-min-size", "1mb")
    path = tmp_path / "appendonly.aof"
    pipe = client.pipeline(transaction=False)
    for round_ in range(60):
        for i in range(1000):
            pipe.set(f"k{i}", f"{round_}-" + "x" * 20, ex=1000)
        pipe.execute()

    def rewritten_while_writing():
        client.set("during", "rewrite")
        info = client.info("persistence")
        return info["aof_rewrites"] >= 1 and not info["aof_rewrite_in_progress"]

    wait_for(rewritten_while_writing, 30, "a background rewrite to finish")
    assert client.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    client.set("after", "rewrite")
    assert path.stat().st_size < 60 * 1000 * 40
    assert not [name for name in os.listdir(tmp_path) if name.startswith("temp-rewriteaof")]
    client.close()
    server.restart()
    with server.client() as client:
        assert client.dbsize() == 1002
        assert client.get("k999") == b"59-" + b"x" * 20
        assert 990 < client.ttl("k0") <= 1000
        assert client.get("during") == b"rewrite" and client.get("after") == b"rewrite"


def test_bgrewriteaof_command(tmp_path, aof_server):
    server = aof_server(tmp_path).start()
    client = server.client()
    client.set("a", "1")
    client.set("a", "2")
    assert client.bgrewriteaof()
    wait_for(lambda: client.info("persistence")["aof_rewrites"] >= 1, 10, "BGREWRITEAOF to finish")
    assert (tmp_path / "appendonly.aof").read_bytes() == encode("SET", "a", "2")
    client.close()


# An append-only file's records are RESP request frames.
record = encode


# Damage in the middle of the file, each followed by valid records (issue 10, item 7).
MID_FILE_DAMAGE = {
    "garbage_line": b"hello world\r\n",
    "inline_command": b"SET sneaky 1\r\n",
    "torn_record": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nha",
    "bulk_without_crlf": b"*2\r\n$3\r\nDEL\r\n$1\r\nkXX",
    "failing_command": record("SET", "only-a-key"),
    "unknown_command": record("NOSUCH", "x"),
}


def toy_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "toy_redis", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(MID_FILE_DAMAGE))
def test_mid_file_damage_refuses_to_start_and_fix_repairs_it(tmp_path, aof_server, name):
    path = tmp_path / "appendonly.aof"
    good = b"".join(record("SET", f"k{i}", str(i)) for i in range(5))
    after = b"".join(record("SET", f"later{i}", "x") for i in range(3))
    damaged = good + MID_FILE_DAMAGE[name] + after
    path.write_bytes(damaged)

    server = aof_server(tmp_path)
    with pytest.raises(RuntimeError, match="exited with 1") as failure:
        server.start()
    message = str(failure.value).split(": ", 1)[1].strip()
    assert len(message.splitlines()) == 1
    assert f"{path}: bad record at byte {len(good)} (" in message
    assert f"toy-redis --check-aof {path} --fix" in message
    assert path.read_bytes() == damaged  # a refused start changes nothing

    check = toy_cli("--check-aof", str(path))
    assert check.returncode == 1 and f"bad record at byte {len(good)}" in check.stdout
    fixed = toy_cli("--check-aof", str(path), "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    backups = list(tmp_path.glob("appendonly.aof.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    assert path.read_bytes() == good
    assert toy_cli("--check-aof", str(path)).stdout.strip() == f"{path}: ok, 5 records"

    server.start()
    client = server.client()
    assert client.dbsize() == 5 and client.get("k4") == b"4"
    client.close()


def test_big_value_arrives_in_pieces_and_survives_a_restart(tmp_path, aof_server):
    server = aof_server(tmp_path).start()
    value = os.urandom(3 * 1024 * 1024)
    client = RawClient(server.port, timeout=30)
    frame = client.command("SET", "big", value) + client.command("GET", "big")
    for start in range(0, len(frame), 100_000):
        client.send(frame[start : start + 100_000])
    assert client.read() == b"OK" and client.read() == value
    client.close()
    server.stop()
    server.start()
    assert server.client().get("big") == value
