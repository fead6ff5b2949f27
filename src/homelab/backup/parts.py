"""What a backup copies from each service, consistently, and how it is put back.

Each part's files are kept under the absolute path they have on the node (the part's folder in a
backup holds ``var/lib/toy-redis/appendonly.aof``), so a restore sends the folder to ``/`` and
checks every file on the node against the manifest with sha256sum before the service starts.

- prometheus: a TSDB snapshot made by the admin API (``POST /api/v1/admin/tsdb/snapshot``, the head
  block included), copied from the node and then removed there. Restored as the whole TSDB.
- alertmanager: ``nflog`` and ``silences`` from its data folder. Alertmanager replaces each by
  renaming a complete new file (every 15 minutes and at shutdown), so a copy is never torn.
- alertmanager_silences: the silences its API lists, recreated after a restore where the files
  (up to 15 minutes old) lack them.
- toy_redis: ``BGREWRITEAOF``, then, once INFO reports that rewrite done, the AOF up to the size
  INFO gives at that moment: a prefix that ends between two records, whatever is appended after.
- alert_relay: the queue (messages and dead letters in one SQLite file), copied by SQLite's online
  backup API on the node while the relay runs.
- grafana: its SQLite database the same way, plus the provisioning folder and the dashboards.
- certificates: the node's TLS identity (roles.pki.IDENTITY: CA bundle, certificate, key), when
  pki.tls is on for the node; restored with the owners and modes roles.pki gives them.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path
from typing import Callable

import requests

from homelab.backup.manifest import iso_time
from homelab.backup.remote import Remote, RemoteError
from homelab.topology import Topology

# The admin API's snapshot of a day of data takes seconds; a stuck Prometheus fails in this time.
SNAPSHOT_PATH = "/api/v1/admin/tsdb/snapshot"
SNAPSHOT_TIMEOUT_S = 120
# BGREWRITEAOF of 1M keys takes seconds; give up if the rewrite has not finished in this time.
AOF_REWRITE_TIMEOUT_S = 300
AOF_POLL_S = 0.1
REDIS_TIMEOUT_S = 30

# Run on the node by python3: copy a live SQLite database with the online backup API (a reader,
# consistent while the service writes) and write the copy to standard output.
SQLITE_COPY = """
import sqlite3, sys
source = sqlite3.connect(sys.argv[1], timeout=30)
copy = sqlite3.connect(":memory:")
source.backup(copy)
source.close()
sys.stdout.buffer.write(copy.serialize())
"""


def sqlite_copy_command(database: str) -> str:
    return f"python3 -c {shlex.quote(SQLITE_COPY)} {shlex.quote(database)}"


@dataclass(frozen=True)
class Restored:
    """A file or folder a restore replaces, and who must own it afterwards."""

    path: str
    owner: str | None  # user:group; None: as the restore leaves it (root)
    # Named only: a positional tuple of companions once landed in `mode` and broke the restore's chmod.
    _: KW_ONLY
    mode: str | None = None  # octal, e.g. "0640"; None: as it was backed up
    # Also removed before the restore (e.g. SQLite's -wal and -shm beside the database).
    companions: tuple[str, ...] = ()


class Part:
    """One thing to back up on every host that runs ``role``."""

    name: str
    role: str

    def hosts(self, topology: Topology) -> list[str]:
        return topology.hosts_of(self.role)

    def skip_reason(self, topology: Topology, host: str, remote: Remote) -> str | None:
        """Why this host has nothing of this part to back up, or None."""
        return None

    def version(self, remote: Remote) -> str:
        raise NotImplementedError

    def service(self) -> str:
        raise NotImplementedError

    def restored(self) -> list[Restored]:
        raise NotImplementedError

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        """Copy the part into ``dest`` (files under their path on the node, without the leading /)."""
        raise NotImplementedError

    # Parts restored by putting files back need no more; one restored through an API overrides this.
    restores_files = True

    def restore_through_api(self, topology: Topology, host: str, source: Path) -> None:
        raise NotImplementedError

    def check_restored(self, topology: Topology, host: str, source: Path) -> None:
        """After the service started again: raise RemoteError unless it serves what was restored.
        Parts whose service shows nothing more than having started need no check."""


def dpkg_version(remote: Remote, package: str) -> str:
    return remote.run(f"dpkg-query -W -f='${{Version}}' {shlex.quote(package)}").decode().strip()


def _iso_time(epoch_s: float) -> str:
    try:
        return iso_time(datetime.fromtimestamp(epoch_s, timezone.utc))
    except (ValueError, OverflowError):
        return "none"  # an empty TSDB reports the largest timestamp there is


def local(dest: Path, node_path: str) -> Path:
    """Where a file at ``node_path`` on the node goes in the part's folder."""
    path = dest / node_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Prometheus(Part):
    name = role = "prometheus"
    # Loading a day of blocks takes seconds; a Prometheus not serving them after this never will.
    READY_TIMEOUT_S = 120

    def version(self, remote: Remote) -> str:
        from roles.prometheus import PACKAGE

        return dpkg_version(remote, PACKAGE)

    def service(self) -> str:
        from roles.prometheus import SERVICE

        return SERVICE

    def restored(self) -> list[Restored]:
        from roles.prometheus import STORAGE_PATH

        return [Restored(STORAGE_PATH.rstrip("/"), "prometheus:prometheus")]

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from roles.prometheus import SNAPSHOTS_DIR, STORAGE_PATH

        prometheus = topology.access("prometheus", host)
        url = prometheus.url(SNAPSHOT_PATH)
        try:
            response = prometheus.request("POST", SNAPSHOT_PATH, timeout=SNAPSHOT_TIMEOUT_S)
        except requests.RequestException as exc:
            raise RemoteError(f"{host}: cannot reach Prometheus at {url} ({type(exc).__name__})") from None
        if not response.ok:
            raise RemoteError(f"{host}: Prometheus refused a TSDB snapshot: HTTP {response.status_code} "
                              f"{' '.join(response.text.split())[:200]}")
        name = response.json()["data"]["name"]
        snapshot = f"{SNAPSHOTS_DIR}/{name}"
        try:
            remote.fetch_tree(snapshot, ["."], local(dest, STORAGE_PATH))
        finally:
            remote.run(f"rm -rf -- {shlex.quote(snapshot)}")

    def check_restored(self, topology: Topology, host: str, source: Path) -> None:
        """Prometheus answers, with every restored block loaded and the oldest restored sample in reach
        (its own metrics say so); a restore that Prometheus ignored fails here, not days later."""
        from prometheus_client.parser import text_string_to_metric_families

        from roles.prometheus import STORAGE_PATH

        metas = [json.loads(meta.read_text()) for meta in (source / STORAGE_PATH.lstrip("/")).glob("*/meta.json")]
        if not metas:
            return
        oldest_s = min(meta["minTime"] for meta in metas) / 1000
        prometheus = topology.access("prometheus", host)
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        seen = "no answer"
        while time.monotonic() < deadline:
            try:
                response = prometheus.get("/metrics", timeout=10)
            except requests.RequestException as exc:
                seen = f"no answer ({type(exc).__name__})"
            else:
                values = {sample.name: sample.value for family in text_string_to_metric_families(response.text)
                          for sample in family.samples} if response.ok else {}
                loaded = values.get("prometheus_tsdb_blocks_loaded", 0)
                lowest_s = values.get("prometheus_tsdb_lowest_timestamp_seconds", float("inf"))
                if loaded >= len(metas) and lowest_s <= oldest_s:
                    return
                seen = (f"HTTP {response.status_code}" if not response.ok else
                        f"{loaded:.0f} blocks loaded, oldest sample {_iso_time(lowest_s)}")
            time.sleep(1)
        raise RemoteError(f"{host}: Prometheus after the restore: {seen}; expected {len(metas)} restored blocks, "
                          f"oldest sample {_iso_time(oldest_s)} (journalctl -u {self.service()} on the node)")


class Alertmanager(Part):
    name = role = "alertmanager"
    FILES = ("nflog", "silences")

    def version(self, remote: Remote) -> str:
        from roles.alertmanager import PACKAGE

        return dpkg_version(remote, PACKAGE)

    def service(self) -> str:
        from roles.alertmanager import SERVICE

        return SERVICE

    def restored(self) -> list[Restored]:
        from roles.alertmanager import STORAGE_PATH

        return [Restored(f"{STORAGE_PATH}{name}", "prometheus:prometheus") for name in self.FILES]

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from roles.alertmanager import STORAGE_PATH

        present = remote.run(" ; ".join(f"test -f {STORAGE_PATH}{name} && echo {name}" for name in self.FILES)
                             + " ; true").decode().split()
        if present:
            remote.fetch_tree(STORAGE_PATH, present, local(dest, STORAGE_PATH))


class AlertmanagerSilences(Part):
    """Silences as Alertmanager's API lists them at backup time.

    Alertmanager writes its silences file only every 15 minutes and at shutdown, so the file may
    lack the newest silences (a maintenance window opened just before the backup). After the files
    are restored and Alertmanager runs, every silence saved here that has not ended and that the
    restored state lacks is created again, with its matchers, end, author and comment."""

    name = "alertmanager_silences"
    role = "alertmanager"
    FILE = "silences.json"
    restores_files = False
    READY_TIMEOUT_S = 60

    def version(self, remote: Remote) -> str:
        return Alertmanager().version(remote)

    def service(self) -> str:
        return ""

    def restored(self) -> list[Restored]:
        return []

    def _api(self, topology: Topology, host: str):
        from homelab.maintenance import Alertmanager as AlertmanagerApi

        return AlertmanagerApi(topology.access("alertmanager", host))

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from homelab.maintenance import CommandError

        try:
            silences = self._api(topology, host).silences()
        except CommandError as exc:
            raise RemoteError(f"{host}: {exc}") from None
        kept = [silence for silence in silences if silence["status"]["state"] in ("active", "pending")]
        dest.mkdir(parents=True, exist_ok=True)
        (dest / self.FILE).write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")

    def restore_through_api(self, topology: Topology, host: str, source: Path) -> None:
        from homelab.maintenance import CommandError, parse_time

        api = self._api(topology, host)
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while True:
            try:
                present = api.silences()
                break
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        key = lambda silence: (json.dumps(sorted(silence["matchers"], key=json.dumps), sort_keys=True),  # noqa: E731
                               silence["comment"], parse_time(silence["endsAt"]))
        have = {key(silence) for silence in present if silence["status"]["state"] != "expired"}
        now = datetime.now(timezone.utc)
        for silence in json.loads((source / self.FILE).read_text()):
            if key(silence) not in have and parse_time(silence["endsAt"]) > now:
                api.create(tuple(silence["matchers"]), parse_time(silence["endsAt"]), silence["createdBy"],
                           silence["comment"])


class PythonService(Part):
    """toy-redis and the relay: installed from our wheels (roles.python_app)."""

    def _app(self):
        return import_module(f"roles.{self.role}").APP

    def version(self, remote: Remote) -> str:
        app = self._app()
        script = f"import importlib.metadata as m; print(m.version({app.distribution!r}))"
        return remote.run(f"{app.binary('python')} -c {shlex.quote(script)}").decode().strip()

    def service(self) -> str:
        return self._app().service


class ToyRedis(PythonService):
    name = role = "toy_redis"

    def _aof_path(self) -> str:
        from toy_redis.aof import FILENAME

        from roles.toy_redis import DATA_DIR

        return f"{DATA_DIR}/{FILENAME}"

    def restored(self) -> list[Restored]:
        app = self._app()
        return [Restored(self._aof_path(), f"{app.service}:{app.service}")]

    def skip_reason(self, topology: Topology, host: str, remote: Remote) -> str | None:
        if not topology.settings(host, self.role).appendonly:
            return "toy_redis.appendonly is off: toy-redis keeps nothing on disk"
        return None

    def client(self, topology: Topology, host: str):
        # Through the access helper: with pki.tls on the RESP port speaks TLS only.
        password = None
        if topology.settings(host, self.role).auth:
            from homelab.vault import load_vault
            from roles.toy_redis import PASSWORD_SECRET

            password = load_vault(topology.data(host, "vault_file"),
                                  topology.data(host, "vault_password_file"))[PASSWORD_SECRET]
        return topology.access("toy_redis", host, "resp").redis(
            password=password, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        import redis

        try:
            with self.client(topology, host) as client:
                size = rewrite_aof(client)
        except redis.RedisError as exc:
            raise RemoteError(f"{host}: toy-redis: {type(exc).__name__}: {exc}") from None
        path = self._aof_path()
        remote.read_to(f"head -c {size} {shlex.quote(path)}", local(dest, path))
        copied = local(dest, path).stat().st_size
        if copied != size:
            raise RemoteError(f"{host}: {path}: copied {copied} bytes, INFO said {size}")


def rewrite_aof(client, timeout: float = AOF_REWRITE_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep) -> int:
    """BGREWRITEAOF and wait for it; the AOF's size once it is done (a prefix ending between records)."""
    before = client.info("persistence")
    if not before.get("aof_enabled"):
        raise RemoteError("toy-redis: aof_enabled is 0: the server keeps no append-only file")
    # A rewrite already running started before this backup: wait for one that starts after it.
    started = before["aof_rewrites"] + (1 if before["aof_rewrite_in_progress"] else 0)
    deadline = time.monotonic() + timeout
    requested = False
    while True:
        info = client.info("persistence")
        if requested and not info["aof_rewrite_in_progress"]:
            if info["aof_last_bgrewrite_status"] != "ok":
                raise RemoteError("toy-redis: BGREWRITEAOF failed (aof_last_bgrewrite_status err); see its log")
            if info["aof_rewrites"] > started:
                return int(info["aof_current_size"])
        if not requested and not info["aof_rewrite_in_progress"]:
            client.execute_command("BGREWRITEAOF")
            requested = True
        if time.monotonic() > deadline:
            raise RemoteError(f"toy-redis: BGREWRITEAOF not done after {timeout:.0f}s")
        sleep(AOF_POLL_S)


class AlertRelay(PythonService):
    name = role = "alert_relay"

    def restored(self) -> list[Restored]:
        from roles.alert_relay import QUEUE_FILES, QUEUE_MODE, QUEUE_OWNER

        queue, *companions = QUEUE_FILES
        return [Restored(queue, QUEUE_OWNER, mode=QUEUE_MODE, companions=tuple(companions))]

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from roles.alert_relay import QUEUE_PATH

        remote.read_to(sqlite_copy_command(QUEUE_PATH), local(dest, QUEUE_PATH))


class Grafana(Part):
    name = role = "grafana"

    def hosts(self, topology: Topology) -> list[str]:
        return topology.hosts_of(self.role)

    def skip_reason(self, topology: Topology, host: str, remote: Remote) -> str | None:
        if host not in topology.serving(self.role):
            return ("Grafana is not installed there: lab nodes cannot reach Grafana's package repository "
                    "(roles.grafana_repo skips it)")
        return None

    def version(self, remote: Remote) -> str:
        from roles.grafana.package import PACKAGE

        return dpkg_version(remote, PACKAGE.name)

    def service(self) -> str:
        from roles.grafana import SERVICE

        return SERVICE

    def restored(self) -> list[Restored]:
        from roles.grafana import DASHBOARDS_DIR
        from roles.grafana.package import DATABASE, PACKAGE, PROVISIONING_DIR

        own = f"{PACKAGE.user}:{PACKAGE.group}"
        config = f"root:{PACKAGE.group}"
        return [Restored(DATABASE, own, companions=(f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}-journal")),
                Restored(PROVISIONING_DIR, config), Restored(DASHBOARDS_DIR, config)]

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from roles.grafana import DASHBOARDS_DIR
        from roles.grafana.package import DATABASE, PROVISIONING_DIR

        remote.read_to(sqlite_copy_command(DATABASE), local(dest, DATABASE))
        for folder in (PROVISIONING_DIR, DASHBOARDS_DIR):
            remote.fetch_tree(folder, ["."], local(dest, folder))


class Certificates(Part):
    """The node's TLS identity (roles.pki), present when the cluster runs with pki.tls on."""

    name = "certificates"
    role = "base"  # every host

    def skip_reason(self, topology: Topology, host: str, remote: Remote) -> str | None:
        from roles.pki import TLS_DIR

        # Not the folder's presence: one left from when TLS was on is nothing a restore should bring back.
        if not topology.settings(host, "pki").tls:
            return "pki.tls is off: the node has no TLS identity to keep"
        if remote.run(f"test -d {shlex.quote(TLS_DIR)} && echo yes || true").strip() != b"yes":
            return f"{TLS_DIR} does not exist on the node (deploy it with pki.tls on first)"
        return None

    def version(self, remote: Remote) -> str:
        return ""

    def service(self) -> str:
        return ""  # read by the services that use them at their next start

    def restored(self) -> list[Restored]:
        from roles.pki import IDENTITY

        # Owners and modes as roles.pki sets them (the key readable by its group's services). The
        # folder and the roles' web configs in it stay as the deploy left them: restored as root's
        # they would lock out the services that read them.
        return [Restored(tls_file.path, tls_file.owner, mode=tls_file.mode) for tls_file in IDENTITY]

    def backup(self, topology: Topology, host: str, remote: Remote, dest: Path) -> None:
        from roles.pki import IDENTITY, TLS_DIR

        remote.fetch_tree(TLS_DIR, [posixpath.relpath(tls_file.path, TLS_DIR) for tls_file in IDENTITY],
                          local(dest, TLS_DIR))


PARTS: tuple[Part, ...] = (Prometheus(), Alertmanager(), AlertmanagerSilences(), ToyRedis(), AlertRelay(), Grafana(),
                           Certificates())
PART_BY_NAME = {part.name: part for part in PARTS}
