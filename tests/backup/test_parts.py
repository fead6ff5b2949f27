"""The parts' consistency steps, run for real here: SQLite's online backup while a writer commits,
toy-redis's AOF taken after BGREWRITEAOF while clients keep writing, and a Prometheus started on a
restored snapshot."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from homelab.backup.parts import PARTS, SQLITE_COPY, Prometheus, rewrite_aof
from homelab.backup.remote import RemoteError
from roles.prometheus import STORAGE_PATH
from tests.roles.test_prometheus import free_port, needs_prometheus, topology_of
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


@contextmanager
def prometheus_on(data: Path, port: int, scrape_interval: str = "1s"):
    """A real Prometheus scraping itself, its TSDB in ``data``, listening on loopback ``port``."""
    config = data.parent / f"prometheus-{port}.yml"
    config.write_text(f"global: {{scrape_interval: {scrape_interval}}}\n"
                      f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n")
    process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-admin-api"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if found := check():
                return found
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.3)


@needs_prometheus
def test_restore_check_waits_for_prometheus_to_load_the_restored_blocks(tmp_path):
    """The check a restore ends with passes once Prometheus serves the snapshot's data, and fails with
    one line naming the node and the blocks expected when Prometheus runs without them."""
    port = free_port()
    topology = topology_of({"mon": {"ssh_hostname": "127.0.0.1", "prometheus": {"listen_port": port}}},
                           prometheus=["mon"])
    with prometheus_on(tmp_path / "original", port) as url:
        wait_until(lambda: requests.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=2).json()["data"]["result"],
                   30, "a first scrape")
        name = requests.post(f"{url}/api/v1/admin/tsdb/snapshot", timeout=30).json()["data"]["name"]
    # The backup folder's layout: the snapshot's blocks under the TSDB's path on the node.
    source = tmp_path / "backup"
    shutil.copytree(tmp_path / "original" / "snapshots" / name, source / STORAGE_PATH.lstrip("/"))
    assert list((source / STORAGE_PATH.lstrip("/")).glob("*/meta.json")), "the snapshot holds no block"

    part = Prometheus()
    part.READY_TIMEOUT_S = 20
    shutil.copytree(source / STORAGE_PATH.lstrip("/"), tmp_path / "restored")
    with prometheus_on(tmp_path / "restored", port):
        part.check_restored(topology, "mon", source)

    with prometheus_on(tmp_path / "ignored", port), pytest.raises(RemoteError) as refused:
        part.check_restored(topology, "mon", source)
    message = str(refused.value)
    assert message.startswith("mon: Prometheus after the restore: 0 blocks loaded") and "\n" not in message
    assert "expected 1 restored blocks" in message


class ShellRecorder:
    """A Remote that keeps the scripts a restore would run on the node."""

    host = "node"

    def __init__(self):
        self.scripts: list[str] = []

    def run(self, script: str, input: bytes | None = None, timeout: float = 0) -> bytes:
        self.scripts.append(script)
        return b""

    def send_tree(self, source: Path, folder: str) -> None:
        pass


@pytest.mark.parametrize("part", [part for part in PARTS if part.restores_files], ids=lambda part: part.name)
def test_each_restore_script_is_valid_shell_that_owns_and_removes_what_the_part_names(part, tmp_path):
    """What `homelab restore` runs for each part parses as sh (a tuple once slipped into a chmod and
    the script failed, leaving the relay's queue root's), removes every companion (SQLite's -wal),
    and gives every target its owner and mode."""
    from homelab.backup.run import _restore_one

    node = ShellRecorder()
    _restore_one(node, part, tmp_path / "backed-up", {})
    for script in node.scripts:
        parsed = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{script}: {parsed.stderr}"
    removal = next(script for script in node.scripts if script.startswith("rm -rf -- "))
    for target in part.restored():
        assert all(shlex.quote(path) in removal.split() for path in (target.path, *target.companions))
        fixes = [script for script in node.scripts if f"[ -e {shlex.quote(target.path)} ]" in script]
        if target.owner:
            assert any(f"chown -R {target.owner} " in script for script in fixes), target
        if target.mode:
            assert any(f"chmod {target.mode} " in script for script in fixes), target
