"""Backup settings: group data key `backup` (inventory/group_data/all.py), the same for the whole cluster."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from homelab.config import ConfigError, StrictModel, settings_from_data
from homelab.topology import Topology
from homelab.types import Duration, seconds

KEY = "backup"


class BackupSettings(StrictModel):
    """Where backups go on the control machine, how many are kept, and when the timer takes one."""

    # Root-only (0700): backups hold the relay's queue and Grafana's database.
    directory: str = Field("/var/backups/homelab-ops", pattern=r"^/\S+$")
    # Retention: at most the newest keep_count backups, and of those only the ones younger than
    # keep_for; the newest backup is never removed.
    keep_count: int = Field(14, ge=1, le=10000)
    keep_for: Duration = "30d"
    # When `homelab backup timer` runs one: a systemd OnCalendar expression (systemd.time(7)).
    on_calendar: str = Field("*-*-* 03:15:00", pattern=r"^[0-9A-Za-z*:/,. ~-]+$")

    @property
    def keep_for_delta(self) -> timedelta:
        return timedelta(seconds=seconds(self.keep_for))


def backup_settings(topology: Topology) -> BackupSettings:
    """The validated `backup` settings; group data all.py gives every host the same value."""
    if not topology.hosts:
        raise ConfigError("inventory", "", "expected at least one host")
    values = {str(topology.data(host, KEY)) for host in topology.hosts}
    if len(values) > 1:
        raise ConfigError("inventory", KEY, "expected one value for the whole cluster (set it in group_data/all.py)")
    return settings_from_data("all", KEY, BackupSettings, topology.data(topology.hosts[0], KEY))
