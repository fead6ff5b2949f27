"""Promtail on the log_shipper hosts: tails toy-redis's JSON log and pushes it to Loki.

Deprecated: Promtail reached end of life on 2026-03-02; Alloy (the alloy role) is the default log
shipper and replaces it. Promtail is still applied where group data sets `log_shipper = "promtail"`,
with a one-line warning. Only level and event become labels, both with a few fixed values; every other
field stays in the line. Read positions are kept under /var/lib/promtail so a restart neither loses
nor repeats lines. The config passes `promtail -check-syntax` before it replaces the live one. What
the package installs is in roles/promtail/package.py, read from Promtail's packaging.
"""

from __future__ import annotations

from pydantic import Field
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files, server, systemd

from homelab.config import ConfigError, StrictModel
from homelab.types import Port
from roles.common import checked_file, current_topology, render, restart, role_settings
from roles.loki import loki_client
from roles.grafana_repo import GrafanaInstall, install_grafana_package
from roles.promtail.package import PACKAGE
from roles.toy_redis import LOG_FILE as TOY_REDIS_LOG_FILE

SERVICE = PACKAGE.service
CONFIG_FILE = PACKAGE.config_file
POSITIONS_DIR = "/var/lib/promtail"
POSITIONS_FILE = f"{POSITIONS_DIR}/positions.yaml"
CHECK = PACKAGE.check
LOG_SHIPPERS = ("promtail", "alloy")
# What deploys/all.py applies and Prometheus scrapes on a log_shipper host whose data names none.
DEFAULT_LOG_SHIPPER = "alloy"
DEPRECATION = ("promtail reached end of life on 2026-03-02 and is deprecated here; "
               "set log_shipper = 'alloy' in group data to ship logs with Alloy")


class Settings(StrictModel):
    """Group data key `promtail`."""

    install: GrafanaInstall
    listen_port: Port = 9080
    # The real file, not the /var/log/toy-redis.log link: tailers follow rotation by inode.
    toy_redis_log: str = Field(TOY_REDIS_LOG_FILE, pattern=r"^/\S+$")


def chosen_log_shipper() -> str:
    """The role named by host data `log_shipper`: "promtail" or "alloy"."""
    chosen = host.data.get("log_shipper", DEFAULT_LOG_SHIPPER)
    if chosen not in LOG_SHIPPERS:
        raise ConfigError(f"inventory data for {host.name}", "log_shipper",
                          f"expected 'promtail' or 'alloy' (got {chosen!r})")
    return chosen


def require_chosen(shipper: str) -> None:
    """Stop the run when ``shipper``'s role is applied to a host whose data chose the other one."""
    chosen = chosen_log_shipper()
    if chosen != shipper:
        raise ConfigError(f"inventory data for {host.name}", "log_shipper",
                          f"is {chosen!r}: apply the {chosen} role on this host, not {shipper}")


def stop_other_shipper(other: str, chosen: str) -> None:
    """Two shippers tailing one file would send every line twice: stop the one not chosen."""
    if other in host.get_fact(DebPackages):
        systemd.service(name=f"{other} stopped: {chosen} ships the logs", service=other,
                        running=False, enabled=False)


def render_config(settings: Settings, host_name: str, loki: str, loki_ca_file: str | None = None) -> str:
    """``loki``: Loki's base URL; ``loki_ca_file``: the CA to verify it with when it is https."""
    return render("promtail/config.yml.j2", settings=settings, host_name=host_name,
                  positions_file=POSITIONS_FILE, push_url=f"{loki}/loki/api/v1/push", loki_ca_file=loki_ca_file)


@deploy("promtail")
def apply() -> None:
    require_chosen("promtail")
    logger.warning(f"{host.name}: {DEPRECATION}")
    settings = role_settings("promtail", Settings)
    topology = current_topology()
    loki_url, loki_ca_file = loki_client(topology)
    config_content = render_config(settings, host.name, loki_url, loki_ca_file)
    if not install_grafana_package(PACKAGE, settings.install):
        return
    stop_other_shipper("alloy", "promtail")
    # Debian's log files are group adm; toy-redis's log is too.
    server.user(name="promtail may read logs (group adm)", user=PACKAGE.user, groups=["adm"], append=True,
                create_home=False, ensure_home=False)
    files.directory(name="Promtail positions folder", path=POSITIONS_DIR, user=PACKAGE.user, group=PACKAGE.group,
                    mode="0750")
    config = checked_file(name="Promtail config", dest=CONFIG_FILE, content=config_content, check=CHECK)
    systemd.service(name="Promtail enabled and running", service=SERVICE, running=True, enabled=True)
    restart(SERVICE, "promtail", "Restart Promtail for its new config", config.did_change)
