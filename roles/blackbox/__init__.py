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
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from homelab.config import FieldError, StrictModel
from homelab.types import Duration, Port
from roles.common import checked_file, current_topology, keep_running, render, role_settings
from roles.install import Install, install_packages
from roles.pki.web import web_config

PACKAGE = "prometheus-blackbox-exporter"
SERVICE = "prometheus-blackbox-exporter"
CONFIG_FILE = "/etc/prometheus/blackbox.yml"
DEFAULTS_FILE = "/etc/default/prometheus-blackbox-exporter"
CONFIG_CHECK = "prometheus-blackbox-exporter --config.check --config.file={staged}"
# The package's service runs as this user.
SERVICE_USER = "prometheus"
# Its login to secured health paths (homelab.access.callers names it) and where its password is.
WEB_USER = "blackbox"
WEB_PASSWORD_FILE = "/etc/prometheus/blackbox-web-password"

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


# The module of the TLS checks' plain TCP connect (roles/prometheus tls_check_targets), added with pki.tls.
PORT_MODULE = "homelab_port_open"


def tls_module(name: str) -> str:
    """The module probing secured health paths: ``name``'s, with the cluster CA and blackbox's login."""
    return f"{name}_tls"


def cert_module(name: str) -> str:
    """The module checking listeners that admit callers by certificate (Listener.client_cert):
    ``name``'s, with the cluster CA and the node's own certificate instead of a login."""
    return f"{name}_tls_cert"


def redirect_module(name: str) -> str:
    """The module probing a listener that only redirects to https (Listener.redirect): ``name``'s,
    expecting that redirect, not followed."""
    return f"{name}_redirect"


def render_config(settings: Settings, tls: bool = False) -> str:
    """The modules of group data; with ``tls`` (pki.tls), also tls_module(health_module), which
    sends blackbox's login only to secured (https) listeners, never over plain HTTP,
    cert_module(health_module), which presents the node's certificate instead, PORT_MODULE, a
    TCP connect for the TLS checks, and redirect_module(health_module)."""
    from roles.nginx import REDIRECT_STATUS
    from roles.pki import CA_FILE, CERT_FILE, KEY_FILE

    modules = {name: module.model_dump(exclude_none=True) for name, module in settings.modules.items()}
    if tls:
        health = modules[settings.health_module]
        modules[tls_module(settings.health_module)] = {
            **health, "http": {**health.get("http", {}), "tls_config": {"ca_file": CA_FILE},
                               "basic_auth": {"username": WEB_USER, "password_file": WEB_PASSWORD_FILE}}}
        modules[cert_module(settings.health_module)] = {
            **health, "http": {**health.get("http", {}),
                               "tls_config": {"ca_file": CA_FILE, "cert_file": CERT_FILE, "key_file": KEY_FILE}}}
        modules[redirect_module(settings.health_module)] = {
            **health, "http": {**health.get("http", {}), "valid_status_codes": [REDIRECT_STATUS],
                               "follow_redirects": False,
                               "fail_if_header_not_matches": [{"header": "Location", "regexp": "^https://"}]}}
        modules[PORT_MODULE] = {"prober": "tcp", **({"timeout": health["timeout"]} if "timeout" in health else {}),
                                "tcp": {"preferred_ip_protocol": "ip4"}}
    body = yaml.safe_dump({"modules": modules}, sort_keys=False, default_flow_style=False)
    return render("blackbox/blackbox.yml.j2", body=body)


def render_defaults(settings: Settings, web_flags: list[str] = ()) -> str:
    return render("blackbox/blackbox-exporter.default.j2", config_file=CONFIG_FILE,
                  listen_port=settings.listen_port, web_flags=web_flags)


@deploy("blackbox")
def apply() -> None:
    from roles.pki.web import password_file

    settings = role_settings("blackbox", Settings)
    tls = current_topology().settings(host.name, "pki").tls
    install_packages("blackbox", [PACKAGE], settings.install)
    if tls:
        password_file(WEB_USER, WEB_PASSWORD_FILE, SERVICE_USER)
    config = checked_file(
        name=f"blackbox modules in {CONFIG_FILE}",
        dest=CONFIG_FILE,
        content=render_config(settings, tls),
        check=CONFIG_CHECK,
    )
    flags = checked_file(
        name=f"blackbox flags in {DEFAULTS_FILE}",
        dest=DEFAULTS_FILE,
        content=render_defaults(settings, web_config("blackbox", SERVICE_USER)),
    )
    keep_running(SERVICE, "blackbox", restart_on=(flags,), reload_on=(config,))
    if not tls:
        # Once the modules without TLS are in force: no password lingers unused.
        files.file(name=f"No web password file {WEB_PASSWORD_FILE} with pki.tls off", path=WEB_PASSWORD_FILE,
                   present=False)
