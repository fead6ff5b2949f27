"""The queue file and token files gone wrong, at start and while running, with real relay processes.

A queue that cannot be used stops the start (and --check-config) with one line naming the path and
the cause, and the file is left as it was. A full disk while running is a 503 saying so, a metric
and a log line, and nothing is lost once there is room again. /healthz tells whether the queue
takes writes and the worker delivers.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from alert_relay.store import MIN_FREE_BYTES, Store
from alert_relay.worker import LOOP_FAILURE_GRACE_S
from tests.alert_relay.conftest import RELAY, Relay, notification, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")


def start_refused(relay: Relay) -> str:
    """Both --check-config and a start refuse the config: exit 2, one line on stderr (the same one),
    and a queue file that was there is left as it was."""
    queue = Path(relay.config["queue_path"])
    before = fingerprint(queue) if queue.is_file() else None
    lines = []
    for flag in ("--check-config", "--config"):
        result = subprocess.run([str(RELAY), flag, str(relay.config_path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (flag, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        lines.append(result.stderr.strip())
    assert lines[0] == lines[1]
    if before is not None:
        assert fingerprint(queue) == before
    return lines[0]


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The file's content and mode, and which files are beside it."""
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode,
            sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)))


def filled_queue(path: Path, messages: int = 400) -> None:
    """A queue file with enough rows to span many pages, closed cleanly (no -wal left)."""
    store = Store(path)
    store.enqueue([(f"key{n}", "alert", "#homelab-alerts", {"text": "x" * 200, "n": n}) for n in range(messages)])
    store.close()


@pytest.fixture
def unstarted(tmp_path, slack, faxplus):
    return Relay(tmp_path / "relay", slack, faxplus)


def test_corrupt_queue_file_is_refused_and_left_as_it_was(unstarted):
    queue = Path(unstarted.config["queue_path"])
    queue.write_bytes(b"this is not an SQLite database\n" * 200)
    line = start_refused(unstarted)
    assert str(queue) in line and "corrupt" in line and "not a database" in line


def test_queue_with_a_damaged_page_is_refused_and_left_as_it_was(unstarted):
    queue = Path(unstarted.config["queue_path"])
    filled_queue(queue)
    with sqlite3.connect(queue) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 10
    with queue.open("r+b") as file:  # scribble over a page in the middle of the messages table
        file.seek(page_size * (pages // 2))
        file.write(os.urandom(page_size))
    line = start_refused(unstarted)
    assert str(queue) in line and "corrupt" in line


def test_read_only_queue_file_is_refused_and_left_as_it_was(unstarted):
    queue = Path(unstarted.config["queue_path"])
    filled_queue(queue, 3)
    queue.chmod(0o444)
    line = start_refused(unstarted)
    assert str(queue) in line and "read-only" in line and "0444" in line


def test_unopenable_queue_path_is_refused(unstarted):
    queue = Path(unstarted.config["queue_path"])
    queue.mkdir()
    line = start_refused(unstarted)
    assert str(queue) in line and "not a regular file" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill the file system to the last block; the filler file, to delete for room."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        for block in (65536, 4096, 512):
            try:
                while file.write(b"\0" * block):
                    pass
            except OSError:
                pass
    return filler


@needs_root
def test_queue_on_a_full_disk_is_refused_at_start(tmp_path, slack, faxplus, small_disk):
    relay = Relay(tmp_path / "relay", slack, faxplus, queue_path=str(small_disk / "queue.sqlite"))
    filled_queue(small_disk / "queue.sqlite", 3)
    fill(small_disk)
    line = start_refused(relay)
    assert str(small_disk / "queue.sqlite") in line and "disk full" in line and str(MIN_FREE_BYTES) in line


@needs_root
def test_disk_full_while_running_is_a_503_saying_so_and_nothing_is_lost(tmp_path, slack, faxplus, small_disk):
    relay = Relay(tmp_path / "relay", slack, faxplus, queue_path=str(small_disk / "queue.sqlite")).start()
    try:
        slack.outage(3600)  # keep what is queued in the queue
        assert relay.post_alerts(notification("BeforeFull")).status_code == 200
        filler = fill(small_disk)
        answer = relay.post_alerts(notification("WhileFull"))
        assert answer.status_code == 503 and "disk full" in answer.json()["error"]
        assert relay.metric("alert_relay_queue_write_errors_total", 'cause="disk_full"') >= 1
        health = requests.get(f"{relay.url}/healthz", timeout=5)
        assert health.status_code == 503 and "disk full" in health.json()["error"]
        logged = [e for e in relay.events() if e["event"] == "cannot queue"]
        assert logged and logged[0]["cause"] == "disk_full" and "no transaction" not in logged[0]["error"]

        filler.unlink()
        time.sleep(1.1)  # the next health probe
        assert requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200
        assert relay.post_alerts(notification("WhileFull")).json()["status"] == "queued"  # Alertmanager's retry
        slack.outage(0)
        wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= 2, 20, "both alerts delivered")
        texts = " ".join(call.params["text"] for call in slack.calls_of("chat.postMessage"))
        assert "BeforeFull" in texts and "WhileFull" in texts
    finally:
        relay.stop()


def test_queue_file_is_created_0600_and_an_older_one_tightened(relay):
    queue = Path(relay.config["queue_path"])
    assert stat.S_IMODE(queue.stat().st_mode) == 0o600
    relay.stop()
    queue.chmod(0o644)  # as relays before this one created it
    relay.start()
    assert stat.S_IMODE(queue.stat().st_mode) == 0o600


def test_a_failing_write_shows_in_healthz_until_writes_succeed(relay):
    """One damaged table that every enqueue fails on: /healthz must not say ok meanwhile."""
    assert requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200
    with sqlite3.connect(relay.config["queue_path"]) as db:
        db.execute("CREATE TRIGGER damaged BEFORE INSERT ON messages BEGIN SELECT RAISE(FAIL, 'damaged page'); END")
    assert relay.post_alerts(notification("Damaged")).status_code == 503
    health = requests.get(f"{relay.url}/healthz", timeout=5)
    assert health.status_code == 503 and "damaged page" in health.json()["error"]
    with sqlite3.connect(relay.config["queue_path"]) as db:
        db.execute("DROP TRIGGER damaged")
    assert relay.post_alerts(notification("Damaged")).status_code == 200
    assert requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200


@pytest.mark.slow
def test_healthz_says_when_the_worker_cannot_deliver(relay):
    """A row the worker's loop cannot read (written behind the relay's back) stops delivery: /healthz says so."""
    with sqlite3.connect(relay.config["queue_path"]) as db:
        db.execute("INSERT INTO messages (kind, channel, payload, created) VALUES ('alert', '#x', '{not json', 0)")
    assert relay.post_alerts(notification("WakeTheWorker")).status_code == 200
    health = wait_for(lambda: (h := requests.get(f"{relay.url}/healthz", timeout=5)).status_code == 503 and h.json(),
                      LOOP_FAILURE_GRACE_S + 5, "/healthz to report the failing worker")
    assert "delivery loop failing" in health["error"]
    with sqlite3.connect(relay.config["queue_path"]) as db:
        db.execute("DELETE FROM messages WHERE channel = '#x'")
    wait_for(lambda: requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200, 5, "/healthz to recover")


def test_failing_housekeeping_does_not_stop_delivery(unstarted, slack):
    queue = Path(unstarted.config["queue_path"])
    Store(queue).close()
    with sqlite3.connect(queue) as db:  # an old dedup key whose removal fails
        db.execute("INSERT INTO seen (dedup_key, created) VALUES ('old', 0)")
        db.execute("CREATE TRIGGER damaged BEFORE DELETE ON seen BEGIN SELECT RAISE(FAIL, 'damaged page'); END")
    relay = unstarted.start()
    try:
        assert relay.post_alerts(notification("StillDelivered")).status_code == 200
        wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the alert delivered")
        failed = [e for e in relay.events() if e["event"] == "housekeeping failed"]
        assert len(failed) == 1 and "damaged page" in failed[0]["error"]
    finally:
        relay.stop()


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o660, 0o604])
def test_token_file_readable_by_others_is_refused(unstarted, mode):
    token = Path(unstarted.config["alertmanager_token_file"])
    token.chmod(mode)
    line = start_refused(unstarted)
    assert f"alertmanager_token_file: {token} is owned by root with mode {mode:04o}" in line
    assert "expected owner root and mode 0600 or 0640" in line


def test_token_file_of_another_user_is_refused(unstarted):
    token = Path(unstarted.config["slack_token_file"])
    nobody = pwd.getpwnam("nobody")
    os.chown(token, nobody.pw_uid, nobody.pw_gid)
    line = start_refused(unstarted)
    assert f"slack_token_file: {token} is owned by nobody" in line


def test_token_that_is_not_utf8_is_one_line(unstarted):
    token = Path(unstarted.config["faxplus_token_file"])
    token.write_bytes(b"tok\xff\xfeen\n")
    line = start_refused(unstarted)
    assert f"faxplus_token_file: {token} is not valid UTF-8 text (byte 3)" in line
