"""Loki as a single binary on worker-node-11: filesystem storage, retention and ingestion limits.

The config is checked with `loki -verify-config` before it replaces the live one. What the package
installs (binary, unit, user, paths) is in roles/loki/package.py, read from Loki's packaging. Retention is
applied by the compactor, so it must be whole days (the index period is 24h). The log shippers and
Grafana find Loki through homelab.topology: the first host of the `loki` group, on its listen_port.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from homelab.config import StrictModel
from homelab.types import Port
from roles.common import checked_file, render, restart, role_settings
from roles.grafana_repo import GrafanaInstall, install_grafana_package
from roles.loki.package import PACKAGE

SERVICE = PACKAGE.service
CONFIG_FILE = PACKAGE.config_file
DATA_DIR = "/var/lib/loki"
CHECK = PACKAGE.check


class Settings(StrictModel):
    """Group data key `loki`."""

    install: GrafanaInstall
    listen_port: Port = 3100
    grpc_port: Port = 9096
    log_level: str = Field("info", pattern=r"^(debug|info|warn|error)$")
    # Whole days: the compactor deletes by 24h index period.
    retention: str = "31d"
    reject_older_than: str = Field("7d", pattern=r"^[1-9][0-9]*[hd]$")
    ingestion_rate_mb: int = Field(4, ge=1, le=1024)
    ingestion_burst_size_mb: int = Field(8, ge=1, le=1024)
    max_streams: int = Field(5000, ge=1, le=1_000_000)
    # Keeps label sets small: shippers send job, host, level, event.
    max_label_names_per_series: int = Field(15, ge=1, le=30)
    max_line_size_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # First day of the tsdb/v13 schema; never change it once Loki has data.
    schema_from: str = Field("2024-04-01", pattern=r"^\d{4}-\d{2}-\d{2}$")

    @field_validator("retention")
    @classmethod
    def _whole_days(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]*d", value):
            raise ValueError("expected whole days like '31d' (Loki deletes by 24h index period)")
        return value


def render_config(settings: Settings) -> str:
    return render("loki/config.yml.j2", settings=settings, data_dir=DATA_DIR)


@deploy("loki")
def apply() -> None:
    settings = role_settings("loki", Settings)
    if not install_grafana_package(PACKAGE, settings.install):
        return
    files.directory(name="Loki data folder", path=DATA_DIR, user=PACKAGE.user, group=PACKAGE.group, mode="0750")
    config = checked_file(name="Loki config", dest=CONFIG_FILE, content=render_config(settings), check=CHECK)
    systemd.service(name="Loki enabled and running", service=SERVICE, running=True, enabled=True)
    restart(SERVICE, "loki", "Restart Loki for its new config", config.did_change)
