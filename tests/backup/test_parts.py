"""The parts' consistency steps, run for real here: SQLite's online backup while a writer commits,
and toy-redis's AOF taken after BGREWRITEAOF while clients keep writing."""

from __future__ import annotations

import sqlite3
import subprocess
import threading

import pytest

from homelab.backup.parts import SQLITE_COPY, rewrite_aof
from homelab.backup.remote import RemoteError
from tests.toy_redis.conftest import ToyRedis


def test_sqlite_copy_is_a_consistent_database_while_a_writer_commits(tmp_path):
    """The script the relay's and Grafana's parts run on the node (python3, stdout), run here."""
    path = tmp_path / "queue.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, payload TEXT)")
    db.execute("CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, payload TEXT)")
    db.execute("INSERT INTO dead_letters (payload) VALUES ('gave up')")
    stop = threading.Event()

    def write() -> None:
        writer = sqlite3.connect(path, isolation_level=None)
        while not stop.is_set():
            # Two rows per transaction: a torn copy would show an odd count.
            writer.execute("BEGIN IMMEDIATE")
            writer.executemany("INSERT INTO messages (payload) VALUES (?)", [("a",), ("b",)])
            writer.execute("COMMIT")
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        copies = [subprocess.run(["python3", "-c", SQLITE_COPY, str(path)], capture_output=True, check=True).stdout
                  for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    for number, data in enumerate(copies):
        copy = tmp_path / f"copy{number}.sqlite3"
        copy.write_bytes(data)
        restored = sqlite3.connect(copy)
        assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert restored.execute("SELECT count(*) % 2 FROM messages").fetchone() == (0,)
        assert restored.execute("SELECT payload FROM dead_letters").fetchall() == [("gave up",)]
        restored.close()


def test_sqlite_copy_of_a_missing_database_fails(tmp_path):
    result = subprocess.run(["python3", "-c", SQLITE_COPY, str(tmp_path / "none" / "queue.sqlite3")],
                            capture_output=True)
    assert result.returncode != 0 and not result.stdout


@pytest.fixture
def aof_server(tmp_path):
    server = ToyRedis(tmp_path, "--appendonly", "yes", "--dir", str(tmp_path)).start()
    yield server
    server.stop()


def test_aof_prefix_after_rewrite_loads_every_key_written_before(aof_server, tmp_path):
    client = aof_server.client()
    for start in range(0, 20000, 1000):
        client.mset({f"key:{n}": f"value:{n}" for n in range(start, start + 1000)})
    client.set("gone", "x")
    client.delete("gone")
    stop = threading.Event()

    def keep_writing() -> None:
        writer = aof_server.client()
        n = 0
        while not stop.is_set():
            writer.set(f"later:{n}", "y" * 100)
            n += 1

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        size = rewrite_aof(client)
    finally:
        stop.set()
        thread.join()
    aof = tmp_path / "appendonly.aof"
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "appendonly.aof").write_bytes(aof.read_bytes()[:size])
    # The prefix is whole records only: a strict load accepts it, with no torn tail to cut.
    check = subprocess.run([*aof_server.command()[:3], "--check-aof", str(copy / "appendonly.aof")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    restored = ToyRedis(copy, "--appendonly", "yes", "--dir", str(copy)).start()
    try:
        loaded = restored.client()
        assert loaded.get("key:0") == b"value:0" and loaded.get("key:19999") == b"value:19999"
        assert loaded.get("gone") is None
        assert len(loaded.keys("key:*")) == 20000
    finally:
        restored.stop()


def test_rewrite_aof_refuses_a_server_without_an_aof(tmp_path):
    server = ToyRedis(tmp_path).start()
    try:
        with pytest.raises(RemoteError, match="aof_enabled is 0"):
            rewrite_aof(server.client())
    finally:
        server.stop()
