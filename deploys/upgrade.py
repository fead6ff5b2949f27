"""Upgrade Debian 12 nodes in place to Debian 13: `homelab upgrade NODE` runs it (see docs/upgrade-debian13.md).

    pyinfra -y inventory/homelab.py deploys/upgrade.py --limit worker-node-12

As Debian's release notes say: every apt source naming bookworm is pointed at trixie, then
`apt-get update`, an upgrade without new packages and a full upgrade, non-interactive, keeping the
configuration files on the node (the next deploy of deploys/all.py writes ours again), then a
reboot into the new release. A node already on Debian 13 is left alone, so a second run changes
nothing. Services that do not survive the upgrade as they are (our Python services' venvs were
made for Debian 12's Python) come back with the deploy that must follow.
"""

import time

from pyinfra import host, logger
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, python, server

from homelab.releases import RELEASES
from roles.common import node_release

FROM, TO = RELEASES[12], RELEASES[13]
# Keep the node's configuration files; dpkg must never stop and ask.
APT = ("DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none apt-get -y -q "
       "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")
# Reboot and wait for it: a real machine takes a minute or two, the lab's nodes a few seconds.
REBOOT_TIMEOUT_S = 600


def sources_files() -> list[str]:
    found = host.get_fact(FindFiles, path="/etc/apt/sources.list.d", quote_path=True) or []
    return ["/etc/apt/sources.list", *sorted(path for path in found if path.endswith((".list", ".sources")))]


def reboot_and_wait(state, host) -> None:
    """Reboot and wait until the node answers from its next boot.

    pyinfra's server.reboot tells boots apart by uptime, which a container shares with its host;
    the boot id is each boot's own on a machine and in a systemd-nspawn container alike.
    """

    def boot_id() -> str | None:
        try:
            host.connect(show_errors=False)
            if not host.connected:
                return None
            ok, output = host.run_shell_command("cat /proc/sys/kernel/random/boot_id")
        except Exception:  # the connection died under us: the reboot is under way
            host.disconnect()
            return None
        return output.stdout.strip() if ok else None

    before = boot_id()
    host.run_shell_command("( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &")
    host.disconnect()
    deadline = time.monotonic() + REBOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(2)
        now = boot_id()
        if now and now != before:
            # Degraded is for the deploy and the checks that follow to report, not a failed reboot.
            host.run_shell_command("systemctl is-system-running --wait")
            return
        host.disconnect()  # the old boot still answering, or none yet: a fresh connection next time
    raise RuntimeError(f"{host.name} did not come back from its reboot within {REBOOT_TIMEOUT_S} s")


if node_release() == FROM:
    for path in sources_files():
        files.replace(
            name=f"Point {path} at Debian {TO.version} ({TO.codename})",
            path=path,
            text=FROM.codename,
            replace=TO.codename,
        )
    server.shell(name="apt-get update", commands=[f"{APT} update"])
    server.shell(name="Upgrade the installed packages (no new ones yet)", commands=[f"{APT} upgrade --without-new-pkgs"])
    server.shell(name=f"Full upgrade to Debian {TO.version}", commands=[f"{APT} full-upgrade"])
    python.call(name=f"Reboot into Debian {TO.version}", function=reboot_and_wait)
else:
    logger.info(f"{host.name}: already on Debian {node_release().version}, nothing to upgrade")
