"""node_exporter on every node, from Debian's prometheus-node-exporter package."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt

from homelab.config import StrictModel
from homelab.types import Port
from roles.common import checked_file, keep_running, render, role_settings

PACKAGE = "prometheus-node-exporter"
SERVICE = "prometheus-node-exporter"
DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"


class Settings(StrictModel):
    """Group data key `node_exporter`."""

    listen_port: Port = 9100
    # systemd: unit states for the "service failed" view; textfile: cron-style scripts drop metrics.
    collectors_enabled: list[str] = ["systemd", "textfile"]
    collectors_disabled: list[str] = []
    textfile_directory: str = "/var/lib/prometheus/node-exporter"


def render_args(settings: Settings) -> list[str]:
    args = [f"--web.listen-address=:{settings.listen_port}"]
    args += [f"--collector.{name}" for name in settings.collectors_enabled]
    args += [f"--no-collector.{name}" for name in settings.collectors_disabled]
    if "textfile" in settings.collectors_enabled:
        args.append(f"--collector.textfile.directory={settings.textfile_directory}")
    return args


def render_defaults(settings: Settings) -> str:
    return render("node_exporter/prometheus-node-exporter.default.j2", args=render_args(settings))


@deploy("node_exporter")
def apply() -> None:
    settings = role_settings("node_exporter", Settings)
    apt.packages(
        name=f"Install {PACKAGE}",
        packages=[PACKAGE],
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    flags = checked_file(
        name=f"node_exporter flags in {DEFAULTS_FILE}",
        dest=DEFAULTS_FILE,
        content=render_defaults(settings),
    )
    keep_running(SERVICE, "node_exporter", restart_on=(flags,))
