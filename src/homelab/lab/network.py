"""The lab's shared plumbing on the host: the bridge, the way out to Debian's mirror, the inotify limit.

Nodes reach the outside only through NAT to the addresses of the Debian mirror the host uses, so
they can install Debian packages and nothing else. (An apt-cacher-ng proxy was tried first: under
a dozen nodes running `apt-get update` at once it lost requests and left apt hanging.)

Every step checks the current state first, so leftovers of a crashed run are reused or replaced.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from homelab.lab.errors import LabError
from homelab.lab.image import host_mirror
from homelab.lab.settings import LabSettings
from homelab.types import SCHEME_PORTS

INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Each booted systemd takes several inotify instances; the default 128 runs out near 18 nodes.
INOTIFY_PER_NODE = 32
TABLE_PREFIX = "homelab_lab_"
# Starts the comment of a lab's nft table that records the machine's settings before any lab.
ORIGINALS = "machine settings before the lab: "


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def ensure_bridge(settings: LabSettings) -> None:
    bridge, address = settings.bridge, f"{settings.gateway}/{settings.prefix_length}"
    if run("ip", "link", "show", "dev", bridge).returncode != 0:
        result = run("ip", "link", "add", bridge, "type", "bridge")
        if result.returncode != 0:
            raise LabError(f"cannot create bridge {bridge}: {result.stderr.strip()}")
    shown = run("ip", "-o", "-4", "addr", "show", "dev", bridge).stdout
    if address not in shown.split():
        run("ip", "addr", "flush", "dev", bridge)
        result = run("ip", "addr", "add", address, "dev", bridge)
        if result.returncode != 0:
            raise LabError(f"cannot give bridge {bridge} address {address}: {result.stderr.strip()}")
    run("ip", "link", "set", bridge, "up")


def remove_bridge(settings: LabSettings) -> None:
    if run("ip", "link", "show", "dev", settings.bridge).returncode == 0:
        run("ip", "link", "del", settings.bridge)


def nft_table(settings: LabSettings) -> str:
    return f"{TABLE_PREFIX}{settings.bridge}"


def mirror_addresses() -> dict[str, list[str]]:
    """Host name -> IPv4 addresses of the Debian mirror this machine's apt uses.

    Nodes get these in /etc/hosts and the firewall lets them reach only these: they need no DNS,
    and nothing else outside the lab is reachable from them.
    """
    name = urlsplit(host_mirror()).hostname
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LabError(f"cannot resolve the Debian mirror {name} on this machine: {exc.strerror}") from None
    return {name: sorted({info[4][0] for info in infos})}


def _lab_tables() -> list[str]:
    """The nft tables of every lab up on this machine (in this network namespace), by name."""
    listed = run("nft", "list", "tables", "ip").stdout.split()
    return [word for word in listed if word.startswith(TABLE_PREFIX)]


def _recorded_originals(table: str) -> dict[str, str]:
    """The machine settings a lab's table records as they were before any lab changed them."""
    for line in run("nft", "list", "table", "ip", table).stdout.splitlines():
        line = line.strip()
        if line.startswith(f'comment "{ORIGINALS}'):
            return dict(item.split("=", 1) for item in line[len(f'comment "{ORIGINALS}'):].rstrip('"').split())
    return {}


def _machine_originals(settings: LabSettings) -> dict[str, str]:
    """What ip_forward and the inotify limit were before the first lab now up changed them.

    Labs share both settings. The first lab records them; every later lab copies that record into
    its own table, so whichever lab goes down last restores them, and no lab restores them while
    another still needs them (a scratch lab going down must not cut the shared lab off the mirror).
    """
    for table in sorted(_lab_tables(), key=lambda name: name != nft_table(settings)):
        recorded = _recorded_originals(table)
        if recorded:
            return recorded
    originals = {IP_FORWARD.name: IP_FORWARD.read_text().strip(), INOTIFY_INSTANCES.name: INOTIFY_INSTANCES.read_text().strip()}
    # Recorded in the state folder by the lab tool before it kept them in the table.
    for setting, legacy in ((IP_FORWARD, "ip_forward"), (INOTIFY_INSTANCES, "inotify.max_user_instances")):
        if (settings.state_dir / legacy).exists():
            originals[setting.name] = (settings.state_dir / legacy).read_text().strip()
    return originals


def ensure_mirror_nat(settings: LabSettings, mirrors: dict[str, list[str]]) -> None:
    """Forward and masquerade traffic from the bridge to the mirror's addresses only.

    The table is replaced as a whole each time, so a leftover of a crashed run is simply redone.
    Everything else from the nodes is rejected (not dropped), so a fetch from elsewhere, such as
    a vendor repository, fails at once instead of after a timeout.
    """
    originals = _machine_originals(settings)
    addresses = ", ".join(address for found in mirrors.values() for address in found)
    # The mirror may be reached over http or https, on their standard ports.
    ports = ", ".join(str(port) for port in SCHEME_PORTS.values())
    table = nft_table(settings)
    ruleset = f"""
table ip {table} {{
  comment "{ORIGINALS}{' '.join(f'{key}={value}' for key, value in sorted(originals.items()))}"
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{settings.bridge}" oifname "{settings.bridge}" accept
    iifname "{settings.bridge}" ip daddr {{ {addresses} }} tcp dport {{ {ports} }} accept
    oifname "{settings.bridge}" ct state established,related accept
    iifname "{settings.bridge}" reject with icmp type admin-prohibited
  }}
  chain postrouting {{
    type nat hook postrouting priority 100;
    ip saddr {settings.subnet} oifname != "{settings.bridge}" masquerade
  }}
}}
"""
    run("nft", "delete", "table", "ip", table)
    result = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"nft could not load table {table}: {result.stderr.strip().splitlines()[-1:]}")
    for legacy in ("ip_forward", "inotify.max_user_instances"):
        (settings.state_dir / legacy).unlink(missing_ok=True)
    IP_FORWARD.write_text("1")


def remove_mirror_nat(settings: LabSettings) -> None:
    """Remove the lab's table; the last lab on the machine also restores what the first one changed."""
    table = nft_table(settings)
    originals = _recorded_originals(table) if table in _lab_tables() else {}
    run("nft", "delete", "table", "ip", table)
    if _lab_tables():
        return
    for setting in (IP_FORWARD, INOTIFY_INSTANCES):
        if setting.name in originals:
            setting.write_text(originals[setting.name])


def raise_inotify_limit(node_count: int) -> None:
    """Raise fs.inotify.max_user_instances for many nodes (the last lab down restores it)."""
    wanted = 128 + INOTIFY_PER_NODE * node_count
    if int(INOTIFY_INSTANCES.read_text()) < wanted:
        INOTIFY_INSTANCES.write_text(str(wanted))
