"""node_exporter on every node, from Debian's prometheus-node-exporter package.

Its textfile collector also serves the node's deploy stamp (`stamp_deploy`, the last step of
deploys/all.py): when the last deploy that changed something on the node ran, and from which commit.
"""

from __future__ import annotations

import subprocess
import time
from functools import cache
from io import BytesIO

from pyinfra.api import deploy, operation
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import files

from homelab.config import StrictModel
from homelab.types import Port
from roles.common import REPO_ROOT, checked_file, keep_running, render, role_settings
from roles.install import apt_packages
from roles.pki.web import web_config

PACKAGE = "prometheus-node-exporter"
SERVICE = "prometheus-node-exporter"
DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"
# In the textfile directory; homelab status reads it through Prometheus, or over SSH when that is down.
DEPLOY_STAMP_FILE = "homelab_deploy.prom"
DEPLOY_METRIC = "homelab_last_deploy_timestamp_seconds"
# The package's service runs as this user.
SERVICE_USER = "prometheus"


class Settings(StrictModel):
    """Group data key `node_exporter`."""

    listen_port: Port = 9100
    # systemd: unit states for the "service failed" view; textfile: cron-style scripts drop metrics.
    collectors_enabled: list[str] = ["systemd", "textfile"]
    collectors_disabled: list[str] = []
    textfile_directory: str = "/var/lib/prometheus/node-exporter"


def render_args(settings: Settings, web_flags: list[str] = ()) -> list[str]:
    args = [f"--web.listen-address=:{settings.listen_port}", *web_flags]
    args += [f"--collector.{name}" for name in settings.collectors_enabled]
    args += [f"--no-collector.{name}" for name in settings.collectors_disabled]
    if "textfile" in settings.collectors_enabled:
        args.append(f"--collector.textfile.directory={settings.textfile_directory}")
    return args


def render_defaults(settings: Settings, web_flags: list[str] = ()) -> str:
    return render("node_exporter/prometheus-node-exporter.default.j2", args=render_args(settings, web_flags))


@deploy("node_exporter")
def apply() -> None:
    settings = role_settings("node_exporter", Settings)
    apt_packages(f"Install {PACKAGE}", [PACKAGE])
    web_flags = web_config("node_exporter", SERVICE_USER)
    flags = checked_file(
        name=f"node_exporter flags in {DEFAULTS_FILE}",
        dest=DEFAULTS_FILE,
        content=render_defaults(settings, web_flags),
    )
    keep_running(SERVICE, "node_exporter", restart_on=(flags,))


@cache
def deployed_commit() -> str:
    """The repo's commit this control machine deploys (with -dirty for uncommitted changes), or unknown."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", "--short=12", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_deploy_stamp(moment: float, commit: str) -> str:
    return (f"# HELP {DEPLOY_METRIC} When a deploy last changed something on this node, and from which commit.\n"
            f"# TYPE {DEPLOY_METRIC} gauge\n"
            f'{DEPLOY_METRIC}{{commit="{commit}"}} {moment:.0f}\n')


def _changed_anything() -> bool:
    """Whether an operation of this run has changed this host so far."""
    operations = ctx_state.get().ops[ctx_host.get()].values()
    return any(data.operation_meta.is_complete() and data.operation_meta.did_change() for data in operations)


def stamp_deploy() -> None:
    """The last step of a deploy: the stamp, rewritten only when the run changed the node, so a run
    that changes nothing changes nothing (and the stamp tells when the node last changed)."""
    settings = role_settings("node_exporter", Settings)
    deploy_stamp(name="Deploy stamp for homelab status", dest=f"{settings.textfile_directory}/{DEPLOY_STAMP_FILE}",
                 _if=_changed_anything)


@operation()
def deploy_stamp(dest: str):
    """Write the stamp: now, and the commit deployed. Made when it runs, so that a run that changed
    nothing does not ask git (a second or more on a loaded machine, once per host).

    + dest: the stamp's file in node_exporter's textfile directory
    """
    yield from files.put._inner(src=BytesIO(render_deploy_stamp(time.time(), deployed_commit()).encode()), dest=dest,
                                mode="0644")
