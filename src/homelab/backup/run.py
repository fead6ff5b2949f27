"""`homelab backup` and `homelab restore`: every part from every node, and back onto one.

A backup copies the parts (homelab.backup.parts) of all nodes in parallel into
``<directory>/.partial-<time>``, writes the manifest, renames the folder to ``<time>`` and applies
retention. One backup runs at a time per directory (a lock file in it). Whatever the outcome, the
result is reported to Prometheus (homelab.backup.report).

A restore checks the whole manifest first (a one-line error naming the first file that fails
and no node touched), then, per part, in one script on the node (restore_script): stops the
service, replaces its files, checks each one against the manifest's sha256, starts the service
(also when a step fails); then waits until the service shows it serves the restored data where it
can tell (Prometheus: the restored blocks loaded).
"""

from __future__ import annotations

import fcntl
import posixpath
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from homelab.backup import manifest as manifests
from homelab.backup.manifest import BackupError, Manifest, Part as PartEntry, Skipped
from homelab.backup.parts import PART_BY_NAME, PARTS, Part
from homelab.backup.remote import Remote, RemoteError, unpack_command
from homelab.backup.settings import backup_settings
from homelab.topology import Topology

LOCK_FILE = ".lock"
# Nodes copied at once: each is one ssh stream; more would only compete for the same disk.
PARALLEL_NODES = 8

Log = Callable[[str], None]


class Remotes:
    """One Remote per node, sharing a folder for their ssh master connections."""

    def __init__(self, topology: Topology):
        self.topology = topology
        # Short: a unix socket path must stay under 108 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
        self._remotes: dict[str, Remote] = {}

    def __call__(self, host: str) -> Remote:
        if host not in self._remotes:
            self._remotes[host] = Remote(self.topology, host, self.folder)
        return self._remotes[host]

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def remotes(topology: Topology) -> Iterator[Remotes]:
    found = Remotes(topology)
    try:
        yield found
    finally:
        found.close()


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    with open(directory / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"{directory}: another homelab backup is writing there") from None
        yield


@dataclass
class Outcome:
    folder: Path
    manifest: Manifest
    seconds: float
    size: int
    removed: list[Path]


def backup(topology: Topology, inventory: str, directory: Path, log: Log) -> Outcome:
    """Take a backup of every node into a new dated folder in ``directory``; raise on any failure."""
    settings = backup_settings(topology)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    started = time.monotonic()
    with locked(directory):
        moment = datetime.now(timezone.utc)
        name = manifests.folder_name(moment)
        final = directory / name
        if final.exists():
            raise BackupError(f"{final}: a backup of that second exists already")
        partial = directory / f"{manifests.PARTIAL_PREFIX}{name}"
        manifest = Manifest(created=manifests.iso_time(moment), inventory=inventory)
        jobs = [(part, host) for part in PARTS for host in part.hosts(topology)]
        try:
            with remotes(topology) as remote, ThreadPoolExecutor(PARALLEL_NODES) as pool:
                results = list(pool.map(lambda job: _backup_one(topology, remote, *job, partial, log), jobs))
            for result in results:
                (manifest.skipped if isinstance(result, Skipped) else manifest.parts).append(result)
            manifests.write(partial, manifest)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        removed = manifests.prune(directory, settings.keep_count, settings.keep_for_delta, moment)
    size = sum(entry["size"] for entry in manifest.files.values())
    return Outcome(final, manifest, time.monotonic() - started, size, removed)


def _backup_one(topology: Topology, remote: Remotes, part: Part, host: str, partial: Path,
                log: Log) -> PartEntry | Skipped:
    node = remote(host)
    reason = part.skip_reason(topology, host, node)
    if reason:
        log(f"{host} {part.name}: skipped: {reason}")
        return Skipped(host, part.name, reason)
    began = time.monotonic()
    version = part.version(node)
    part.backup(topology, host, node, partial / host / part.name)
    log(f"{host} {part.name} {version}: copied in {time.monotonic() - began:.1f}s")
    return PartEntry(host, part.name, version)


def restore(topology: Topology, folder: Path, node: str | None, log: Log) -> list[PartEntry]:
    """Put the backup in ``folder`` back (only ``node``'s parts if given); the parts restored."""
    manifest = manifests.verify(folder)
    if node is not None and node not in topology.hosts:
        raise BackupError(f"--node: unknown node {node!r}: expected one of {', '.join(topology.hosts)}")
    chosen = [entry for entry in manifest.parts if node in (None, entry.node)]
    if not chosen:
        raise BackupError(f"{folder / manifests.MANIFEST}: no parts of {node or 'any node'} in it")
    unknown = sorted({entry.node for entry in chosen} - set(topology.hosts))
    if unknown:
        raise BackupError(f"{folder / manifests.MANIFEST}: node {unknown[0]!r} is not in the inventory")
    with remotes(topology) as remote:
        for entry in chosen:
            part = PART_BY_NAME.get(entry.part)
            if part is None:
                raise BackupError(f"{folder / manifests.MANIFEST}: unknown part {entry.part!r}")
            began = time.monotonic()
            source = folder / entry.node / entry.part
            if part.restores_files:
                _restore_one(remote(entry.node), part, source, manifest.files_of(entry.node, entry.part))
                part.check_restored(topology, entry.node, source)
            else:
                part.restore_through_api(topology, entry.node, source)
            log(f"{entry.node} {entry.part}: restored in {time.monotonic() - began:.1f}s")
    return chosen


def _restore_one(node: Remote, part: Part, source: Path, files: dict[str, dict], root: str = "/") -> None:
    """Put ``part``'s files from ``source`` back on the node (under ``root``) in one script, which
    starts the part's service again whatever step fails (restore_script)."""
    service = part.service()
    if service:
        try:
            node.run(f"systemctl cat {shlex.quote(service)}.service >/dev/null")
        except RemoteError:
            raise BackupError(f"{node.host}: {service} is not installed: deploy the node first, then restore") from None
    checks_file = None
    if files:
        # A file on the node, not in the script: a TSDB's list could outgrow a command line.
        checks = "".join(f"{entry['sha256']}  {posixpath.join(root, path)}\n" for path, entry in sorted(files.items()))
        checks_file = node.run("umask 077 && checks=$(mktemp) && cat > \"$checks\" && echo \"$checks\"",
                               input=checks.encode()).decode().strip()
    try:
        node.run_with_tree(source if source.is_dir() else None, restore_script(part, checks_file, root),
                           f"restore of {part.name}")
    except RemoteError as exc:
        raise BackupError(str(exc)) from None


def restore_script(part: Part, checks_file: str | None, root: str = "/") -> str:
    """The shell script that restores ``part`` on a node from a tar on its standard input: stop the
    service, remove what is replaced, unpack, give the targets their owners and modes, check each
    file against ``checks_file`` (sha256sum's list, removed afterwards), start the service.

    A step that fails (or the script killed) starts the service again all the same, once what was
    unpacked has its owners (a restore cut short once left the relay stopped and its queue root's).
    Its one line on standard error names the step, the step's last error line, and whether the
    service runs again."""
    service = part.service()
    unit = shlex.quote(f"{service}.service") if service else ""
    targets = part.restored()
    under = lambda path: shlex.quote(posixpath.join(root, path.lstrip("/")))  # noqa: E731
    doomed = [under(path) for target in targets for path in (target.path, *target.companions)]
    fixes = [f"    if [ -e {under(target.path)} ]; then "
             + "; ".join([*([f"chown -R {target.owner} {under(target.path)}"] if target.owner else []),
                          *([f"chmod {target.mode} {under(target.path)}"] if target.mode else [])]) + "; fi"
             for target in targets if target.owner or target.mode]
    start_again = (f"if systemctl start {unit}; then again='{service} started again'; "
                   f"else again='{service} did not start again (journalctl -u {service})'; fi"
                   if service else "again='no service to start'")
    lines = [
        "set -e",
        # The steps' errors go to a file, so the one line on standard error can name the last of them.
        "errors=$(mktemp)",
        "exec 3>&2 2>\"$errors\"",
        "step='beginning'",
        "fix_owners() {", *fixes, "    :", "}",
        "finish() {",
        "    status=$?",
        "    trap - EXIT HUP INT TERM",
        "    set +e",
        *([f"    rm -f -- {shlex.quote(checks_file)}"] if checks_file else []),
        "    if [ \"$status\" -ne 0 ]; then",
        "        cause=$(grep . \"$errors\" | tail -n 1)",
        "        fix_owners",
        f"        {start_again}",
        "        echo \"failed while $step (${cause:-exit status $status}); $again\" >&3",
        "    fi",
        "    rm -f -- \"$errors\"",
        "    exit \"$status\"",
        "}",
        "trap finish EXIT",
        # A signal (the ssh connection lost) ends the script through the same path.
        "trap 'exit 129' HUP", "trap 'exit 130' INT", "trap 'exit 143' TERM",
    ]
    if service:
        lines += [f"step='stopping {service}'", f"systemctl stop {unit}"]
    lines += ["step='removing the files it replaces'", "rm -rf -- " + " ".join(doomed),
              "step='unpacking the backup'", unpack_command(root),
              "step='giving the files their owners and modes'", "fix_owners"]
    if checks_file:
        lines += ["step='checking the files against the manifest'",
                  f"sha256sum --quiet --strict -c {shlex.quote(checks_file)}"]
    if service:
        lines += [f"step='starting {service}'", f"systemctl start {unit}"]
    return "\n".join(lines) + "\n"
