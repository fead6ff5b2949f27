"""Kernel and open-file tuning on every node, from the tuning file (inventory/tuning.yaml).

Sysctls are applied live and persisted in /etc/sysctl.d/ so a reboot keeps them. Inside a container
(the lab's nspawn nodes) only network sysctls are per-node; kernel-global ones (fs.*, vm.*, some
net.core.*) belong to the host kernel, so there they are persisted but not applied live.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import server

from roles.common import REPO_ROOT, checked_file, render
from roles.tuning.settings import Tuning, load_tuning

DEFAULT_TUNING_FILE = "inventory/tuning.yaml"
SYSCTL_FILE = "/etc/sysctl.d/60-homelab-tuning.conf"
LIMITS_FILE = "/etc/security/limits.d/60-homelab-nofile.conf"
SYSTEMD_LIMITS_FILE = "/etc/systemd/system.conf.d/60-homelab-nofile.conf"


def tuning_path() -> Path:
    return REPO_ROOT / host.data.get("tuning_file", DEFAULT_TUNING_FILE)


def host_tuning() -> Tuning:
    """This host's validated tuning (roles such as nginx read their socket settings from it)."""
    return load_tuning(tuning_path())


def render_sysctl_conf(tuning: Tuning, source: str) -> str:
    return render("tuning/sysctl.conf.j2", sysctls=tuning.sysctl_lines(), source=source)


def _writable_sysctls(keys: list[str]) -> set[str]:
    """Sysctls this node may set: in a container, kernel-global ones sit on a read-only /proc/sys."""
    paths = " ".join("/proc/sys/" + key.replace(".", "/") for key in keys)
    script = f"for p in {paths}; do [ -w \"$p\" ] && echo \"$p\"; done; true"
    output = host.get_fact(Command, script) or ""
    return {line.removeprefix("/proc/sys/").replace("/", ".") for line in output.split()}


@deploy("Kernel and file-limit tuning")
def apply() -> None:
    tuning = host_tuning()
    source = str(tuning_path().relative_to(REPO_ROOT)) if tuning_path().is_relative_to(REPO_ROOT) else str(tuning_path())
    sysctls = tuning.sysctl_lines()
    writable = _writable_sysctls(list(sysctls))
    for key, value in sysctls.items():
        if key in writable:
            server.sysctl(name=f"sysctl {key}", key=key, value=value)
        else:
            logger.info(f"{host.name}: {key} is kernel-global here (container); persisted, not applied live")

    checked_file(
        name=f"Persist sysctls in {SYSCTL_FILE}",
        dest=SYSCTL_FILE,
        content=render_sysctl_conf(tuning, source),
    )
    checked_file(
        name=f"Open-file limit for sessions in {LIMITS_FILE}",
        dest=LIMITS_FILE,
        content=render("tuning/limits.conf.j2", nofile=tuning.limits.nofile, source=source),
    )
    systemd_limits = checked_file(
        name=f"Open-file limit for services in {SYSTEMD_LIMITS_FILE}",
        dest=SYSTEMD_LIMITS_FILE,
        content=render("tuning/systemd-limits.conf.j2", nofile=tuning.limits.nofile, source=source),
    )
    # DefaultLimitNOFILE is read at manager start: only a re-exec applies it to services started later.
    server.shell(name="Re-exec systemd for the new default limits", commands=["systemctl daemon-reexec"], _if=systemd_limits.did_change)
