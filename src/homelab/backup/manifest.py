"""A backup folder, its manifest, the newest backup's time, and retention.

A backup is a folder named after the moment it started, in UTC (``2026-11-29T031500Z``), under the
backup directory. It is written as ``.partial-<name>`` and renamed once complete, so a folder with
that name is a finished backup. Inside: ``<node>/<part>/...`` as copied from the nodes, and
``manifest.json``::

    {"format": 1, "created": "2026-11-29T03:15:00Z", "inventory": "...",
     "parts": [{"node": "worker-node-12", "part": "toy_redis", "version": "0.1.0"}],
     "skipped": [{"node": "master-node", "part": "grafana", "reason": "..."}],
     "files": {"worker-node-12/toy_redis/appendonly.aof": {"size": 123, "sha256": "..."}}}

``verify`` checks every file byte for byte against it (and that no file was added) before a
restore touches any node.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"
NAME_FORMAT = "%Y-%m-%dT%H%M%SZ"
_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{6}Z$")
_CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup folder that cannot be used: one line naming the file and what is wrong."""


@dataclass
class Part:
    node: str
    part: str  # the role it belongs to (prometheus, toy_redis, ...), or "certificates"
    version: str


@dataclass
class Skipped:
    node: str
    part: str
    reason: str


@dataclass
class Manifest:
    created: str
    inventory: str
    parts: list[Part] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = FORMAT

    def files_of(self, node: str, part: str) -> dict[str, dict[str, Any]]:
        """The part's files, by path relative to the part's folder."""
        prefix = f"{node}/{part}/"
        return {path.removeprefix(prefix): entry for path, entry in self.files.items() if path.startswith(prefix)}


def iso_time(moment: datetime) -> str:
    """A moment as the manifest and the backup's messages write it (UTC, to the second)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def folder_name(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(NAME_FORMAT)


def backup_time(folder: Path) -> datetime | None:
    """When the backup in ``folder`` was started, from its name; None if it is not a backup's name."""
    if not _NAME.match(folder.name):
        return None
    return datetime.strptime(folder.name, NAME_FORMAT).replace(tzinfo=timezone.utc)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """size and sha256 of every regular file under ``folder``, by path relative to it (the manifest aside)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink() or not path.is_file() or relative == MANIFEST:
            continue
        found[relative] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return found


def write(folder: Path, manifest: Manifest) -> None:
    manifest.files = describe_files(folder)
    (folder / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True) + "\n")


def load(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path}: not found: expected a backup folder made by homelab backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot be read as JSON ({exc})") from None
    try:
        if data.get("format") != FORMAT:
            raise BackupError(f"{path}: format: expected {FORMAT}, got {data.get('format')!r}")
        return Manifest(
            created=data["created"], inventory=data["inventory"], format=data["format"],
            parts=[Part(**part) for part in data["parts"]],
            skipped=[Skipped(**skipped) for skipped in data["skipped"]],
            files={name: {"size": int(entry["size"]), "sha256": str(entry["sha256"])}
                   for name, entry in data["files"].items()},
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BackupError(f"{path}: not a backup manifest ({type(exc).__name__}: {exc})") from None


def verify(folder: Path) -> Manifest:
    """The manifest, once every file it lists has its size and sha256, and no file is missing from it."""
    manifest = load(folder)
    for name, entry in sorted(manifest.files.items()):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise BackupError(f"{path}: missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != entry["size"]:
            raise BackupError(f"{path}: {size} bytes, {MANIFEST} says {entry['size']}")
        if file_sha256(path) != entry["sha256"]:
            raise BackupError(f"{path}: sha256 differs from {MANIFEST}")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if (path.is_file() or path.is_symlink()) and relative != MANIFEST and relative not in manifest.files:
            raise BackupError(f"{path}: not listed in {MANIFEST}")
    return manifest


def backups(directory: Path) -> list[tuple[datetime, Path]]:
    """Finished backups in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(backup_time(path), path) for path in directory.iterdir()
             if path.is_dir() and (path / MANIFEST).is_file()]
    return sorted((moment, path) for moment, path in found if moment is not None)


def newest_backup_time(directory: str | Path) -> datetime | None:
    """When the newest finished backup in ``directory`` was started (UTC), or None if there is none.

    This is what `homelab status` shows as the last backup's age; the backup directory is the
    ``backup.directory`` setting (homelab.backup.settings).
    """
    found = backups(Path(directory))
    return found[-1][0] if found else None


def expired(directory: Path, keep_count: int, keep_for: timedelta, now: datetime) -> list[Path]:
    """Backups retention removes: all but the newest ``keep_count``, and of those any older than
    ``keep_for``, except the newest backup, which is always kept (a cluster whose backups stopped
    still has its last one)."""
    found = [path for _moment, path in reversed(backups(directory))]  # newest first
    if not found:
        return []
    kept = {found[0], *(path for path in found[:keep_count] if now - backup_time(path) <= keep_for)}
    return [path for path in found if path not in kept]


def prune(directory: Path, keep_count: int, keep_for: timedelta, now: datetime) -> list[Path]:
    """Remove the expired backups and any partial one left by a crash; the folders removed."""
    removed = expired(directory, keep_count, keep_for, now)
    removed += [path for path in directory.glob(f"{PARTIAL_PREFIX}*") if path.is_dir()]
    for path in removed:
        shutil.rmtree(path)
    return removed
