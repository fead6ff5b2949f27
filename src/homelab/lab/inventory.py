"""Which nodes a pyinfra inventory asks for, read the way pyinfra reads an inventory file.

Module-level lists of (name, data) tuples are groups; names starting with "_" are not. A lab node
is any host whose data carries ``lab_index`` (set by ``lab_host``); its address is ``ssh_hostname``,
its Debian release ``debian_release`` (default: homelab.releases.DEFAULT_RELEASE), and how it runs
our services, ``runtime`` (homelab.containers.runtime), from its host data or else from the group
data pyinfra would give it (group_data/<group>.py or all.py next to the inventory file): a node
that runs containers is booted with what Docker needs.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from pathlib import Path

from homelab.containers.runtime import DEFAULT_RUNTIME, KEY as RUNTIME_KEY, Runtime, check_runtime
from homelab.lab.errors import LabError
from homelab.releases import DEFAULT_RELEASE, UnsupportedRelease, debian_release


@dataclass(frozen=True, order=True)
class LabNode:
    name: str
    address: str
    release: int = DEFAULT_RELEASE
    runtime: Runtime = DEFAULT_RUNTIME


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


def group_data_runtimes(path: Path, groups: set[str]) -> dict[Path, object]:
    """The `runtime` each of these groups' data files (and all.py) next to the inventory sets."""
    found = {}
    for group in sorted(groups | {"all"}):
        data_file = path.parent / "group_data" / f"{group}.py"
        if not data_file.is_file():
            continue
        try:
            namespace = runpy.run_path(str(data_file))
        except Exception as exc:  # group data is user code too
            raise LabError(f"{data_file}: cannot be loaded: {type(exc).__name__}: {exc}") from None
        if RUNTIME_KEY in namespace:
            found[data_file] = namespace[RUNTIME_KEY]
    return found


def node_runtime(path: Path, name: str, data: dict, groups: set[str]) -> Runtime:
    """Host data wins; otherwise a node runs containers when any of its groups' data says so
    (the lab only needs to know whether Docker may run there)."""
    sources = {path: data[RUNTIME_KEY]} if RUNTIME_KEY in data else group_data_runtimes(path, groups)
    for source, value in sources.items():
        try:
            check_runtime(value)
        except ValueError as exc:
            raise LabError(f"{source}: host {name!r}: {RUNTIME_KEY}: {exc}") from None
    return "container" if "container" in sources.values() else DEFAULT_RUNTIME


def read_nodes(path: Path) -> list[LabNode]:
    """The lab nodes of an inventory, sorted by name; an inventory with none is an error."""
    nodes = []
    for name, (data, groups) in inventory_groups(path).items():
        if "lab_index" not in data:
            continue
        if len(name) > 64 or not all(c.isalnum() or c == "-" for c in name):
            raise LabError(f"{path}: host {name!r}: expected a hostname of letters, digits and '-'")
        try:
            release = debian_release(data.get("debian_release", DEFAULT_RELEASE)).version
        except UnsupportedRelease as exc:
            raise LabError(f"{path}: host {name!r}: debian_release: {exc}") from None
        nodes.append(LabNode(name=name, address=data["ssh_hostname"], release=release,
                             runtime=node_runtime(path, name, data, groups)))
    if not nodes:
        raise LabError(f"{path}: no lab hosts in it (expected hosts made with homelab.lab.settings.lab_host)")
    addresses = [node.address for node in nodes]
    duplicate = next((a for a in addresses if addresses.count(a) > 1), None)
    if duplicate:
        raise LabError(f"{path}: address {duplicate} is given to more than one host")
    return sorted(nodes)
