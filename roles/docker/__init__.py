"""Docker from Debian (docker.io) on hosts whose runtime is `container` (roles/container_runtime).

Our containers use the host's network (they listen where the topology says), so the daemon gets
no bridge and leaves the host's firewall and IP forwarding alone: no iptables rules of its own
next to the firewall role's, no forwarding switched on behind the tuning role's back. Its config
is written before the package is installed, so the daemon's first start already uses it.
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.operations import files, systemd

from roles.common import checked_file, node_release
from roles.install import Install, install_packages

# Debian 13 split the client out of docker.io into docker-cli (only recommended, and we install
# without recommends); on Debian 12 docker.io has it.
PACKAGES = {"bookworm": ["docker.io"], "trixie": ["docker.io", "docker-cli"]}
CONFIG_DIR = "/etc/docker"
DAEMON_CONFIG = f"{CONFIG_DIR}/daemon.json"
DAEMON_SETTINGS = {"bridge": "none", "iptables": False, "ip6tables": False, "ip-forward": False}

# Both services call apply() on a host running both containers; Docker is set up once.
_applied: set[str] = set()


def render_daemon_config() -> str:
    return json.dumps(DAEMON_SETTINGS, indent=2, sort_keys=True) + "\n"


def apply() -> None:
    if host.name in _applied:
        return
    _applied.add(host.name)
    files.directory(name=f"{CONFIG_DIR} folder", path=CONFIG_DIR, mode="0755")
    daemon_config = checked_file(name="Docker daemon config", dest=DAEMON_CONFIG, content=render_daemon_config())
    install_packages("docker", PACKAGES[node_release().codename], Install())
    systemd.service(name="docker enabled and running", service="docker", running=True, enabled=True)
    systemd.service(name="Restart docker for its new config", service="docker", restarted=True,
                    _if=daemon_config.did_change)
