"""Grafana Alloy on the log_shipper hosts: the same toy-redis pipeline as the promtail role.

The default log shipper (group data `log_shipper`, roles.promtail.DEFAULT_LOG_SHIPPER). Tails toy-redis's JSON log, makes level and event
labels (the rest stays in the line), and pushes to Loki. Read positions live under Alloy's storage
path, /var/lib/alloy/data. The config passes `alloy validate` before it replaces the live one; Alloy
reloads it on SIGHUP, so a new config needs no restart. What the package installs is in
roles/alloy/package.py, read from Alloy's packaging.
"""

from __future__ import annotations

from pydantic import Field
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd

from homelab.config import StrictModel
from homelab.types import Port
from roles.alloy.package import ENVIRONMENT_FILE, PACKAGE, STORAGE_PATH
from roles.common import checked_file, current_topology, render, restart, role_settings
from roles.grafana_repo import GrafanaInstall, install_grafana_package
from roles.toy_redis import LOG_FILE as TOY_REDIS_LOG_FILE
from roles.promtail import require_chosen, stop_other_shipper

SERVICE = PACKAGE.service
CONFIG_FILE = PACKAGE.config_file
DEFAULTS_FILE = ENVIRONMENT_FILE
CHECK = PACKAGE.check


class Settings(StrictModel):
    """Group data key `alloy`."""

    install: GrafanaInstall
    listen_port: Port = 12345
    # The real file, not the /var/log/toy-redis.log link: tailers follow rotation by inode.
    toy_redis_log: str = Field(TOY_REDIS_LOG_FILE, pattern=r"^/\S+$")


def render_config(settings: Settings, host_name: str, loki: str) -> str:
    return render("alloy/config.alloy.j2", settings=settings, host_name=host_name, storage_path=STORAGE_PATH,
                  push_url=f"{loki}/loki/api/v1/push")


def render_defaults(settings: Settings) -> str:
    return render("alloy/alloy.default.j2", config_file=CONFIG_FILE,
                  listen_address=f"0.0.0.0:{settings.listen_port}")


@deploy("alloy")
def apply() -> None:
    require_chosen("alloy")
    settings = role_settings("alloy", Settings)
    config_content = render_config(settings, host.name, current_topology().endpoint("loki").url())
    if not install_grafana_package(PACKAGE, settings.install):
        return
    stop_other_shipper("promtail", "alloy")
    # The package adds the alloy user to group adm (PACKAGE.extra_groups), which may read toy-redis's log.
    config = checked_file(name="Alloy config", dest=CONFIG_FILE, content=config_content, check=CHECK,
                          group=PACKAGE.group, mode="0640")
    flags = checked_file(name="Alloy flags", dest=DEFAULTS_FILE, content=render_defaults(settings))
    systemd.service(name="Alloy enabled and running", service=SERVICE, running=True, enabled=True)
    restart(SERVICE, "alloy", "Restart Alloy for new flags", flags.did_change)
    systemd.service(name="Reload Alloy for its new config", service=SERVICE, reloaded=True,
                    _if=lambda: config.did_change() and not flags.did_change())
