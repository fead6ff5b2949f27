"""Which nodes a pyinfra inventory asks for, read the way pyinfra reads an inventory file.

Module-level lists of (name, data) tuples are groups; names starting with "_" are not. A lab node
is any host whose data carries ``lab_index`` (set by ``lab_host``); its address is ``ssh_hostname``,
its Debian release ``debian_release`` (default: homelab.releases.DEFAULT_RELEASE).
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from pathlib import Path

from homelab.lab.errors import LabError
from homelab.releases import DEFAULT_RELEASE, UnsupportedRelease, debian_release


@dataclass(frozen=True, order=True)
class LabNode:
    name: str
    address: str
    release: int = DEFAULT_RELEASE


def inventory_groups(path: Path) -> dict[str, tuple[dict, set[str]]]:
    """host name -> (its data, the groups it is in)."""
    try:
        namespace = runpy.run_path(str(path))
    except FileNotFoundError:
        raise LabError(f"{path}: inventory file not found") from None
    except Exception as exc:  # the inventory is user code: say which file broke and how
        raise LabError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from None
    hosts: dict[str, tuple[dict, set[str]]] = {}
    for group, members in namespace.items():
        if group.startswith("_") or not isinstance(members, list):
            continue
        for member in members:
            if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], str)):
                continue
            name, data = member
            known_data, groups = hosts.setdefault(name, (dict(data or {}), set()))
            known_data.update(data or {})
            groups.add(group)
    return hosts


def read_nodes(path: Path) -> list[LabNode]:
    """The lab nodes of an inventory, sorted by name; an inventory with none is an error."""
    nodes = []
    for name, (data, _groups) in inventory_groups(path).items():
        if "lab_index" not in data:
            continue
        if len(name) > 64 or not all(c.isalnum() or c == "-" for c in name):
            raise LabError(f"{path}: host {name!r}: expected a hostname of letters, digits and '-'")
        try:
            release = debian_release(data.get("debian_release", DEFAULT_RELEASE)).version
        except UnsupportedRelease as exc:
            raise LabError(f"{path}: host {name!r}: debian_release: {exc}") from None
        nodes.append(LabNode(name=name, address=data["ssh_hostname"], release=release))
    if not nodes:
        raise LabError(f"{path}: no lab hosts in it (expected hosts made with homelab.lab.settings.lab_host)")
    addresses = [node.address for node in nodes]
    duplicate = next((a for a in addresses if addresses.count(a) > 1), None)
    if duplicate:
        raise LabError(f"{path}: address {duplicate} is given to more than one host")
    return sorted(nodes)
