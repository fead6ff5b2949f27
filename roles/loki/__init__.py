"""Loki as a single binary on worker-node-11: filesystem storage, retention and ingestion limits.

The config is checked with `loki -verify-config` before it replaces the live one. What the package
installs (binary, unit, user, paths) is in roles/loki/package.py, read from Loki's packaging. Retention is
applied by the compactor, so it must be whole days (the index period is 24h). The log shippers and
Grafana find Loki through homelab.topology: the first host of the `loki` group, on its listen_port.

With `pki.tls` on, Loki serves that port over TLS with the node's certificate (roles/pki;
`server.http_tls_config`); the shippers, Grafana and Prometheus verify it with the cluster CA.
Loki has no login of its own (auth_enabled is about tenants): the firewall admits only its callers
(homelab.topology.Listener.login is off for it).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from homelab.config import StrictModel
from homelab.types import Port
from roles.common import checked_file, current_topology, render, restart, role_settings
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


def render_config(settings: Settings, tls: bool = False) -> str:
    from roles.pki import CERT_FILE, KEY_FILE

    return render("loki/config.yml.j2", settings=settings, data_dir=DATA_DIR, tls=tls, cert_file=CERT_FILE,
                  key_file=KEY_FILE)


def loki_client(topology) -> tuple[str, str | None]:
    """How a log shipper reaches the first Loki host: its base URL (https when that host has
    pki.tls on) and the CA file on the node to verify it with (None over plain HTTP)."""
    from roles.pki.web import client

    loki = topology.endpoint("loki")
    way = client(topology, "loki", loki.host, "http", "", "")
    return loki.url(scheme=way.scheme), way.ca_file


@deploy("loki")
def apply() -> None:
    from roles.pki import GROUP

    settings = role_settings("loki", Settings)
    tls = current_topology().settings(host.name, "pki").tls
    if not install_grafana_package(PACKAGE, settings.install):
        return
    files.directory(name="Loki data folder", path=DATA_DIR, user=PACKAGE.user, group=PACKAGE.group, mode="0750")
    if tls:
        server.user(name=f"{PACKAGE.user} reads the node's TLS key (group {GROUP})", user=PACKAGE.user, groups=[GROUP],
                    append=True, create_home=False, ensure_home=False)
    config = checked_file(name="Loki config", dest=CONFIG_FILE, content=render_config(settings, tls), check=CHECK)
    systemd.service(name="Loki enabled and running", service=SERVICE, running=True, enabled=True)
    restart(SERVICE, "loki", "Restart Loki for its new config", config.did_change)
