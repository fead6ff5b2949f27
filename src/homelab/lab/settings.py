"""Lab settings shared by the `lab` tool and inventory/lab.py.

The inventory is the source of truth for which nodes exist and their addresses; `lab up` boots
exactly the hosts an inventory lists. Both read the subnet and state directory from here, so a
user changes them in one place (environment variables) and both agree.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

# Not 192.168.1.0/24: that is the reference cluster's range and many home networks'.
DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_STATE_DIR = "/var/lib/homelab-lab"
# Base images outlive `lab down` so the next `lab up` is warm; `lab down --purge` removes them.
DEFAULT_CACHE_DIR = "/var/cache/homelab-lab"
DEFAULT_BRIDGE = "hlab0"


@dataclass(frozen=True)
class LabSettings:
    subnet: ipaddress.IPv4Network
    state_dir: Path
    cache_dir: Path
    bridge: str

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's own address on the lab bridge."""
        return self.subnet.network_address + 1

    def address(self, index: int) -> str:
        """Address of node number ``index`` (10, 11, ... leave room below for the host)."""
        addr = self.subnet.network_address + index
        if addr not in self.subnet or addr in (self.gateway, self.subnet.broadcast_address):
            raise ValueError(f"lab subnet {self.subnet}: host index {index} is outside it")
        return str(addr)

    @property
    def prefix_length(self) -> int:
        return self.subnet.prefixlen

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "id_ed25519"


def lab_settings() -> LabSettings:
    subnet_text = os.environ.get("HOMELAB_LAB_SUBNET", DEFAULT_SUBNET)
    try:
        subnet = ipaddress.IPv4Network(subnet_text)
    except ValueError as exc:
        raise SystemExit(f"HOMELAB_LAB_SUBNET: expected an IPv4 network like 10.77.0.0/24 ({exc})") from None
    if subnet.num_addresses < 16:
        raise SystemExit(f"HOMELAB_LAB_SUBNET: {subnet} is too small, expected at least a /28")
    state_dir = Path(os.environ.get("HOMELAB_LAB_STATE", DEFAULT_STATE_DIR))
    cache_dir = Path(os.environ.get("HOMELAB_LAB_CACHE", DEFAULT_CACHE_DIR))
    bridge = os.environ.get("HOMELAB_LAB_BRIDGE", DEFAULT_BRIDGE)
    if not (0 < len(bridge) <= 15):
        raise SystemExit(f"HOMELAB_LAB_BRIDGE: {bridge!r} is not a valid interface name (1-15 characters)")
    return LabSettings(subnet=subnet, state_dir=state_dir, cache_dir=cache_dir, bridge=bridge)


def lab_host(name: str, index: int, **data) -> tuple[str, dict]:
    """A pyinfra inventory entry for a lab node: its address and strict-host-key SSH settings."""
    settings = lab_settings()
    host_data = {
        "ssh_hostname": settings.address(index),
        "ssh_user": "root",
        "ssh_key": str(settings.client_key),
        "ssh_known_hosts_file": str(settings.known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "lab_index": index,
        # The lab's vault holds test values only; its password file is committed on purpose.
        "vault_file": "secrets/lab.vault.yml",
        "vault_password_file": "secrets/lab.vault-password",
        # Lab nodes reach only Debian's mirror: a vendor repository they cannot reach (Grafana's)
        # skips that component with a warning instead of failing the node's whole deploy.
        "vendor_packages_optional": True,
    }
    host_data.update(data)
    return name, host_data
