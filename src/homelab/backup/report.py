"""How Prometheus learns that backups work: a metrics file the control machine puts on a node.

The control machine is not a scrape target (it may be a laptop, asleep or behind NAT), so after
every attempt, good or bad, `homelab backup` writes its metrics over SSH into the textfile
collector folder of node_exporter on the first Prometheus host (roles/node_exporter:
``textfile_directory``). That node_exporter is scraped anyway (job ``node``), so the metrics are
there as long as the node is; BackupFailed and BackupStale (alerts/thresholds.yaml) watch them.
A control machine that stops running backups at all stops updating the file: the last success
only ages, and BackupStale fires.

    homelab_backup_last_attempt_timestamp_seconds   when the last attempt ended
    homelab_backup_last_success_timestamp_seconds   when the newest finished backup was started (0: none)
    homelab_backup_last_failed                      1 if the last attempt failed
    homelab_backup_last_duration_seconds            how long the last attempt took
    homelab_backup_last_size_bytes                  the last finished backup's size
"""

from __future__ import annotations

import shlex
import tempfile
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from homelab.backup.remote import Remote
from homelab.config import ConfigError
from homelab.topology import Topology

FILE_NAME = "homelab_backup.prom"


def render(attempt: datetime, last_success: datetime | None, failed: bool, duration_s: float,
           size_bytes: int | None) -> str:
    """The metrics file's text, in the exposition format node_exporter's textfile collector reads."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, value: float) -> None:
        Gauge(name, help_text, registry=registry).set(value)

    gauge("homelab_backup_last_attempt_timestamp_seconds", "When the last homelab backup attempt ended.",
          attempt.timestamp())
    gauge("homelab_backup_last_success_timestamp_seconds",
          "When the newest finished homelab backup was started (0: none).",
          last_success.timestamp() if last_success else 0)
    gauge("homelab_backup_last_failed", "1 if the last homelab backup attempt failed.", int(failed))
    gauge("homelab_backup_last_duration_seconds", "How long the last homelab backup attempt took.", duration_s)
    if size_bytes is not None:
        gauge("homelab_backup_last_size_bytes", "Size of the last finished homelab backup.", size_bytes)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FILE_NAME
        write_to_textfile(str(path), registry)
        return path.read_text()


def destination(topology: Topology) -> tuple[str, str]:
    """(host, folder) the metrics file goes to: the first Prometheus host's textfile folder."""
    hosts = topology.hosts_of("prometheus")
    if not hosts:
        raise ConfigError("inventory", "prometheus", "expected a host in group 'prometheus' to report backups to")
    settings = topology.settings(hosts[0], "node_exporter")
    if "textfile" not in settings.collectors_enabled:
        raise ConfigError(f"inventory data for {hosts[0]}", "node_exporter.collectors_enabled",
                          "expected 'textfile' in it: backups report through node_exporter's textfile collector")
    return hosts[0], settings.textfile_directory


def publish(remote: Remote, folder: str, text: str) -> None:
    """Replace the metrics file atomically (node_exporter never reads half of it)."""
    path = f"{folder}/{FILE_NAME}"
    remote.run(f"mkdir -p {shlex.quote(folder)} && cat > {shlex.quote(path)}.tmp && chmod 0644 {shlex.quote(path)}.tmp"
               f" && mv {shlex.quote(path)}.tmp {shlex.quote(path)}", input=text.encode())
