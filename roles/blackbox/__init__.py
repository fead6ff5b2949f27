"""blackbox_exporter on the blackbox group: its probe modules from group data.

Group data key `blackbox` holds the exporter's `modules` (blackbox_exporter's own module format)
and `health_module`, the module the health probes use. What is probed is not listed here: every
health path a role declares (homelab.topology.ROLES) on every host serving that role, which
roles/prometheus turns into the `blackbox` scrape job, so adding a host to a group adds its probes.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import model_validator
from pyinfra.api import deploy

from homelab.config import FieldError, StrictModel
from homelab.types import Duration, Port
from roles.common import checked_file, keep_running, render, role_settings
from roles.install import Install, install_packages

PACKAGE = "prometheus-blackbox-exporter"
SERVICE = "prometheus-blackbox-exporter"
CONFIG_FILE = "/etc/prometheus/blackbox.yml"
DEFAULTS_FILE = "/etc/default/prometheus-blackbox-exporter"
CONFIG_CHECK = "prometheus-blackbox-exporter --config.check --config.file={staged}"

Prober = Literal["http", "tcp", "icmp", "dns", "grpc"]


class Module(StrictModel):
    """One blackbox_exporter module; the prober's own section is passed through as written.

    The exporter's `--config.check` validates the prober sections in full before a swap.
    """

    prober: Prober
    timeout: Duration | None = None
    http: dict[str, Any] | None = None
    tcp: dict[str, Any] | None = None
    icmp: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    grpc: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _only_its_probers_section(self) -> "Module":
        for other in ("http", "tcp", "icmp", "dns", "grpc"):
            if other != self.prober and getattr(self, other) is not None:
                raise FieldError(other, f"a {self.prober!r} module takes no {other!r} section")
        return self


DEFAULT_MODULES = {
    "http_2xx": Module(prober="http", timeout="5s", http={"preferred_ip_protocol": "ip4"}),
    "tcp_connect": Module(prober="tcp", timeout="5s", tcp={"preferred_ip_protocol": "ip4"}),
}


class Settings(StrictModel):
    """Group data key `blackbox`."""

    install: Install = Install()
    listen_port: Port = 9115
    modules: dict[str, Module] = DEFAULT_MODULES
    # The module of the health probes (homelab.topology's health paths, on every host serving them).
    health_module: str = "http_2xx"

    @model_validator(mode="after")
    def _health_module_is_known(self) -> "Settings":
        if self.health_module not in self.modules:
            raise FieldError("health_module",
                             f"expected one of the modules {sorted(self.modules)}, got {self.health_module!r}")
        return self


def render_config(settings: Settings) -> str:
    modules = {name: module.model_dump(exclude_none=True) for name, module in settings.modules.items()}
    body = yaml.safe_dump({"modules": modules}, sort_keys=False, default_flow_style=False)
    return render("blackbox/blackbox.yml.j2", body=body)


def render_defaults(settings: Settings) -> str:
    return render("blackbox/blackbox-exporter.default.j2", config_file=CONFIG_FILE,
                  listen_port=settings.listen_port)


@deploy("blackbox")
def apply() -> None:
    settings = role_settings("blackbox", Settings)
    install_packages("blackbox", [PACKAGE], settings.install)
    config = checked_file(
        name=f"blackbox modules in {CONFIG_FILE}",
        dest=CONFIG_FILE,
        content=render_config(settings),
        check=CONFIG_CHECK,
    )
    flags = checked_file(
        name=f"blackbox flags in {DEFAULTS_FILE}",
        dest=DEFAULTS_FILE,
        content=render_defaults(settings),
    )
    keep_running(SERVICE, "blackbox", restart_on=(flags,), reload_on=(config,))
