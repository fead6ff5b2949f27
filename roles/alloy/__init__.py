"""Grafana Alloy on the log_shipper hosts: the same toy-redis pipeline as the promtail role.

The default log shipper (group data `log_shipper`, roles.promtail.DEFAULT_LOG_SHIPPER). Tails toy-redis's JSON log, makes level and event
labels (the rest stays in the line), and pushes to Loki. Read positions live under Alloy's storage
path, /var/lib/alloy/data. The config passes `alloy validate` before it replaces the live one; Alloy
reloads it on SIGHUP, so a new config needs no restart. What the package installs is in
roles/alloy/package.py, read from Alloy's packaging.

With `pyroscope_url` set, Alloy also scrapes the CPU profiles of every toy-redis and alert relay
whose `profiling_hz` is on (homelab.topology's profile_scrapes, so the firewall and the services'
logins follow) with one `pyroscope.scrape` per service, and pushes them with `pyroscope.write`
(arguments as grafana/alloy documents them in docs/sources/reference/components/pyroscope/). It
logs in as user alloy, like Prometheus does as prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pprof_sampler import PATH as PROFILE_PATH
from pprof_sampler import WINDOW_S
from pydantic import Field
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from homelab.config import StrictModel
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.types import Port
from roles.alloy.package import ENVIRONMENT_FILE, PACKAGE, STORAGE_PATH
from roles.common import checked_file, current_topology, render, restart, role_settings
from roles.loki import loki_client
from roles.grafana_repo import GrafanaInstall, install_grafana_package
from roles.pki.web import Client, client, password_file
from roles.toy_redis import LOG_FILE as TOY_REDIS_LOG_FILE
from roles.promtail import require_chosen, stop_other_shipper

SERVICE = PACKAGE.service
CONFIG_FILE = PACKAGE.config_file
DEFAULTS_FILE = ENVIRONMENT_FILE
CHECK = PACKAGE.check
# Alloy's web password (the vault's web_password_alloy), for the services' metrics login.
WEB_PASSWORD_FILE = "/etc/alloy/web-password"


class Settings(StrictModel):
    """Group data key `alloy`."""

    install: GrafanaInstall
    listen_port: Port = 12345
    # The real file, not the /var/log/toy-redis.log link: tailers follow rotation by inode.
    toy_redis_log: str = Field(TOY_REDIS_LOG_FILE, pattern=r"^/\S+$")
    # Pyroscope's base URL (e.g. http://pyroscope.example:4040): when set, CPU profiles are
    # scraped from the services with profiling_hz on and pushed there.
    pyroscope_url: str | None = Field(None, pattern=r"^https?://[^\s\"\\]+$")
    # Each scrape asks for the last (interval - 1) seconds (Alloy's delta profiling), which the
    # services' samplers keep for at most WINDOW_S.
    profile_scrape_interval_s: int = Field(15, ge=2, le=WINDOW_S + 1)


@dataclass(frozen=True)
class ProfileTarget:
    """One service whose CPU profiles Alloy scrapes: a `pyroscope.scrape` component of its own, as
    scheme and login may differ between hosts."""

    label: str  # the component's label
    service: str  # Pyroscope's service_name
    host: str
    address: str  # host:port
    client: Client


def profile_targets(topology: Topology, host_name: str) -> list[ProfileTarget]:
    """What Alloy on ``host_name`` scrapes for Pyroscope (Topology.profile_scrapes)."""
    targets = []
    for scrape in topology.profile_scrapes():
        if scrape.source_host != host_name:
            continue
        role = ROLE_BY_NAME[scrape.target]
        endpoint = topology.endpoint(role.name, scrape.target_host, role.profiles)
        targets.append(ProfileTarget(
            label=re.sub(r"\W", "_", f"{role.name}_{scrape.target_host}"), service=role.title,
            host=scrape.target_host, address=endpoint.netloc,
            client=client(topology, role.name, scrape.target_host, role.profiles, scrape.source, WEB_PASSWORD_FILE)))
    return targets


def render_config(settings: Settings, host_name: str, loki: str, profiles: list[ProfileTarget] = (),
                  loki_ca_file: str | None = None) -> str:
    """``loki``: Loki's base URL; ``loki_ca_file``: the CA to verify it with when it is https."""
    return render("alloy/config.alloy.j2", settings=settings, host_name=host_name, storage_path=STORAGE_PATH,
                  push_url=f"{loki}/loki/api/v1/push", profiles=profiles, profile_path=PROFILE_PATH,
                  loki_ca_file=loki_ca_file)


def render_defaults(settings: Settings) -> str:
    return render("alloy/alloy.default.j2", config_file=CONFIG_FILE,
                  listen_address=f"0.0.0.0:{settings.listen_port}")


@deploy("alloy")
def apply() -> None:
    require_chosen("alloy")
    settings = role_settings("alloy", Settings)
    topology = current_topology()
    profiles = profile_targets(topology, host.name)
    loki_url, loki_ca_file = loki_client(topology)
    config_content = render_config(settings, host.name, loki_url, profiles, loki_ca_file)
    if not install_grafana_package(PACKAGE, settings.install):
        return
    if any(target.client.password_file for target in profiles):
        password_file("alloy", WEB_PASSWORD_FILE, PACKAGE.group)
    stop_other_shipper("promtail", "alloy")
    # The package adds the alloy user to group adm (PACKAGE.extra_groups), which may read toy-redis's log.
    config = checked_file(name="Alloy config", dest=CONFIG_FILE, content=config_content, check=CHECK,
                          group=PACKAGE.group, mode="0640")
    flags = checked_file(name="Alloy flags", dest=DEFAULTS_FILE, content=render_defaults(settings))
    systemd.service(name="Alloy enabled and running", service=SERVICE, running=True, enabled=True)
    restart(SERVICE, "alloy", "Restart Alloy for new flags", flags.did_change)
    systemd.service(name="Reload Alloy for its new config", service=SERVICE, reloaded=True,
                    _if=lambda: config.did_change() and not flags.did_change())
