"""The parts' consistency steps, run for real here: SQLite's online backup while a writer commits,
toy-redis's AOF taken after BGREWRITEAOF while clients keep writing, and a Prometheus started on a
restored snapshot."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shlex
import shutil
import sqlite3
import subprocess
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from homelab.backup.manifest import BackupError
from homelab.backup.parts import PARTS, SQLITE_COPY, AlertRelay, Prometheus, Restored, local, rewrite_aof
from homelab.backup.remote import Remote, RemoteError
from roles.alert_relay import APP, QUEUE_MODE, QUEUE_PATH
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
        return b"/tmp/tmp.checks\n"

    def run_with_tree(self, source: Path | None, script: str, what: str | None = None) -> None:
        self.scripts.append(script)


@pytest.mark.parametrize("part", [part for part in PARTS if part.restores_files], ids=lambda part: part.name)
def test_each_restore_script_is_valid_shell_that_owns_and_removes_what_the_part_names(part, tmp_path):
    """What `homelab restore` runs for each part parses as sh (a tuple once slipped into a chmod and
    the script failed, leaving the relay's queue root's), removes every companion (SQLite's -wal),
    and gives every target its owner and mode."""
    from homelab.backup.run import _restore_one

    node = ShellRecorder()
    _restore_one(node, part, tmp_path / "backed-up", {"some/file": {"sha256": "0" * 64}})
    for script in node.scripts:
        parsed = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{script}: {parsed.stderr}"
    restore = node.scripts[-1]
    removal = next(line for line in restore.splitlines() if line.startswith("rm -rf -- "))
    assert "sha256sum --quiet --strict -c /tmp/tmp.checks" in restore
    for target in part.restored():
        assert all(shlex.quote(path) in removal.split() for path in (target.path, *target.companions))
        fixes = [line for line in restore.splitlines() if f"[ -e {shlex.quote(target.path)} ]" in line]
        if target.owner:
            assert any(f"chown -R {target.owner} " in line for line in fixes), target
        if target.mode:
            assert any(f"chmod {target.mode} " in line for line in fixes), target


class LocalNode(Remote):
    """A Remote whose node is this machine: the restore's real commands, run here by sh."""

    host = "local"
    _sudo = ""

    def __init__(self):
        pass

    def command(self, script: str) -> list[str]:
        return ["sh", "-c", script]


class RelayOwnedByUs(AlertRelay):
    """The relay's part, its queue given to the user running the tests (the relay's does not exist here)."""

    def restored(self) -> list[Restored]:
        me = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
        return [replace(target, owner=me) for target in super().restored()]


@pytest.fixture
def systemctl(tmp_path, monkeypatch):
    """systemd cannot run here: a systemctl that logs its arguments (and fails `start` if told to)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "systemctl.log"
    script = folder / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                      f'[ "$1" = start ] && [ -e {tmp_path}/start-fails ] && {{ echo "Job failed" >&2; exit 1; }}\nexit 0\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    # mktemp's files (the script's error log, the checks list) land here, to show they are removed.
    (tmp_path / "scratch").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    return lambda: log.read_text().splitlines() if log.exists() else []


def relay_backup(tmp_path, queue: bytes) -> tuple[Path, Path, dict[str, dict]]:
    """A backup of the relay's part, a root holding an older queue, and the manifest's files."""
    backup, root = tmp_path / "backup", tmp_path / "root"
    local(backup, QUEUE_PATH).write_bytes(queue)
    local(root, QUEUE_PATH).write_bytes(b"older queue")
    (root / QUEUE_PATH.lstrip("/")).chmod(0o644)
    local(root, f"{QUEUE_PATH}-wal").write_bytes(b"older wal")
    return backup, root, {QUEUE_PATH.lstrip("/"): {"sha256": hashlib.sha256(queue).hexdigest()}}


def test_a_restore_puts_the_queue_back_with_its_mode_and_starts_the_relay(systemctl, tmp_path):
    from homelab.backup.run import _restore_one

    backup, root, files = relay_backup(tmp_path, b"queue as backed up")
    _restore_one(LocalNode(), RelayOwnedByUs(), backup, files, root=str(root))
    queue = root / QUEUE_PATH.lstrip("/")
    assert queue.read_bytes() == b"queue as backed up"
    assert f"{stat.S_IMODE(queue.stat().st_mode):04o}" == QUEUE_MODE
    assert not (root / f"{QUEUE_PATH}-wal".lstrip("/")).exists()
    service = f"{APP.service}.service"
    assert systemctl() == [f"cat {service}", f"stop {service}", f"start {service}"]
    assert not list((tmp_path / "scratch").iterdir())


@pytest.mark.parametrize("start_fails", [False, True], ids=["started-again", "start-fails-too"])
def test_a_restore_that_fails_part_way_starts_the_relay_again_and_says_where_it_failed(systemctl, tmp_path,
                                                                                       start_fails):
    """Forced: the backup's queue differs from the manifest. The relay, stopped for the restore, is
    started again (its queue its user's), and the error is one line naming the step and the cause."""
    from homelab.backup.run import _restore_one

    backup, root, files = relay_backup(tmp_path, b"queue as backed up")
    local(backup, QUEUE_PATH).write_bytes(b"queue damaged since")
    if start_fails:
        (tmp_path / "start-fails").touch()
    with pytest.raises(BackupError) as failed:
        _restore_one(LocalNode(), RelayOwnedByUs(), backup, files, root=str(root))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"local: restore of {AlertRelay.name}: failed while checking the files against the "
                              "manifest (sha256sum: WARNING: 1 computed checksum did NOT match); ")
    service = f"{APP.service}.service"
    if start_fails:
        assert message.endswith(f"{APP.service} did not start again (journalctl -u {APP.service})")
    else:
        assert message.endswith(f"{APP.service} started again")
    assert systemctl() == [f"cat {service}", f"stop {service}", f"start {service}"]
    queue = root / QUEUE_PATH.lstrip("/")
    assert f"{stat.S_IMODE(queue.stat().st_mode):04o}" == QUEUE_MODE
    assert not list((tmp_path / "scratch").iterdir())


def test_a_restore_killed_part_way_starts_the_relay_again(systemctl, tmp_path):
    """The script ended by a signal (its ssh connection lost) mid-way also starts the relay again."""
    from homelab.backup.run import restore_script

    backup, root, files = relay_backup(tmp_path, b"queue as backed up")
    # The unpacking step waits on its standard input, which stays open: the script is stopped there.
    script = restore_script(RelayOwnedByUs(), None, str(root))
    process = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while systemctl()[-1:] != [f"stop {APP.service}.service"] or (root / QUEUE_PATH.lstrip("/")).exists():
        assert time.monotonic() < deadline, "the restore script did not reach its unpacking step"
        time.sleep(0.05)
    process.terminate()
    _, errors = process.communicate(timeout=10)  # sh runs its trap once tar, now without input, ends
    assert process.returncode == 143
    assert errors.startswith("failed while unpacking the backup (tar: ") and errors.count("\n") == 1
    assert errors.endswith(f"; {APP.service} started again\n")
    assert systemctl()[-1] == f"start {APP.service}.service"
