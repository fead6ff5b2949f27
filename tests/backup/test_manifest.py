"""The backup folder's manifest: written from the files, verified byte for byte, one-line errors; retention."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from homelab.backup import manifest, newest_backup_time
from homelab.backup.manifest import BackupError, Manifest, Part, Skipped

NOW = datetime(2026, 11, 29, 3, 15, tzinfo=timezone.utc)


def make_backup(directory: Path, moment: datetime, files: dict[str, bytes] | None = None) -> Path:
    folder = directory / manifest.folder_name(moment)
    for name, content in (files or {"worker-node-12/toy_redis/var/lib/toy-redis/appendonly.aof": b"*1\r\n"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write(folder, Manifest(created=moment.isoformat(), inventory="inventory/lab.py",
                                    parts=[Part("worker-node-12", "toy_redis", "0.1.0")],
                                    skipped=[Skipped("master-node", "grafana", "not installed")]))
    return folder


@pytest.fixture
def backup(tmp_path):
    return make_backup(tmp_path, NOW, {
        "worker-node-12/toy_redis/var/lib/toy-redis/appendonly.aof": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        "worker-node-14/prometheus/var/lib/prometheus/metrics2/01ABC/chunks/000001": os.urandom(4096),
        "worker-node-14/prometheus/var/lib/prometheus/metrics2/01ABC/meta.json": b"{}",
    })


def test_a_written_manifest_lists_every_file_and_verifies(backup):
    found = manifest.verify(backup)
    assert sorted(found.files) == sorted(
        path.relative_to(backup).as_posix() for path in backup.rglob("*") if path.is_file() and path.name != "manifest.json")
    chunk = "worker-node-14/prometheus/var/lib/prometheus/metrics2/01ABC/chunks/000001"
    assert found.files[chunk]["size"] == 4096
    assert found.files_of("worker-node-14", "prometheus") == {
        "var/lib/prometheus/metrics2/01ABC/chunks/000001": found.files[chunk],
        "var/lib/prometheus/metrics2/01ABC/meta.json": found.files[
            "worker-node-14/prometheus/var/lib/prometheus/metrics2/01ABC/meta.json"]}
    assert found.parts == [Part("worker-node-12", "toy_redis", "0.1.0")]
    assert found.skipped == [Skipped("master-node", "grafana", "not installed")]


def test_one_changed_byte_is_named_with_its_file(backup):
    chunk = backup / "worker-node-14/prometheus/var/lib/prometheus/metrics2/01ABC/chunks/000001"
    data = bytearray(chunk.read_bytes())
    data[1000] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"^.*/01ABC/chunks/000001: sha256 differs from manifest.json$"):
        manifest.verify(backup)


@pytest.mark.parametrize("change, message", [
    (lambda path: path.write_bytes(path.read_bytes() + b"x"), r"appendonly.aof: \d+ bytes, manifest.json says \d+$"),
    (lambda path: path.unlink(), r"appendonly.aof: missing \(listed in manifest.json\)$"),
    (lambda path: path.with_name("extra.aof").write_bytes(b""), r"extra.aof: not listed in manifest.json$"),
])
def test_a_missing_grown_or_added_file_is_refused(backup, change, message):
    change(backup / "worker-node-12/toy_redis/var/lib/toy-redis/appendonly.aof")
    with pytest.raises(BackupError, match=message):
        manifest.verify(backup)


@pytest.mark.parametrize("content, message", [
    (None, r"manifest.json: not found: expected a backup folder made by homelab backup$"),
    ("{", r"manifest.json: cannot be read as JSON"),
    ('{"format": 2}', r"manifest.json: format: expected 1, got 2$"),
    ('{"format": 1, "created": "x"}', r"manifest.json: not a backup manifest \(KeyError"),
])
def test_a_broken_manifest_is_one_line_naming_it(backup, content, message):
    path = backup / "manifest.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(BackupError, match=message) as raised:
        manifest.verify(backup)
    assert "\n" not in str(raised.value)


def test_newest_backup_time_ignores_partial_and_foreign_folders(tmp_path):
    assert newest_backup_time(tmp_path / "absent") is None
    make_backup(tmp_path, NOW - timedelta(days=1))
    newest = make_backup(tmp_path, NOW)
    (tmp_path / f".partial-{manifest.folder_name(NOW + timedelta(hours=1))}").mkdir()
    (tmp_path / "2027-01-01T000000Z").mkdir()  # no manifest: not finished
    (tmp_path / "notes").mkdir()
    assert newest_backup_time(tmp_path) == NOW
    assert manifest.backup_time(newest) == NOW


def test_retention_keeps_the_newest_count_within_age_and_always_the_newest(tmp_path):
    ages = [0, 1, 2, 3, 10, 40]  # days before NOW
    folders = {age: make_backup(tmp_path, NOW - timedelta(days=age)) for age in ages}
    partial = tmp_path / ".partial-2026-11-20T000000Z"
    partial.mkdir()
    removed = manifest.prune(tmp_path, keep_count=4, keep_for=timedelta(days=30), now=NOW)
    assert sorted(removed) == sorted([folders[10], folders[40], partial])
    assert [path for _, path in manifest.backups(tmp_path)] == [folders[3], folders[2], folders[1], folders[0]]
    # Backups stopped long ago: everything is older than keep_for, yet the newest stays.
    manifest.prune(tmp_path, keep_count=4, keep_for=timedelta(hours=1), now=NOW + timedelta(days=100))
    assert [path for _, path in manifest.backups(tmp_path)] == [folders[0]]
