"""What `lab up`, `lab down` and `lab status` do; also used by the test fixtures and the bench.

`up` converges: the nodes the inventory lists are booted (running ones are kept), nodes it does
not list are stopped and removed, the shared plumbing is created or reused. `down` removes all of
it but the cached base image (and that too with purge=True).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from homelab.lab import image, network, nodes, ssh
from homelab.lab.errors import LabError
from homelab.lab.inventory import LabNode, read_nodes
from homelab.lab.settings import LabSettings, lab_settings
from homelab.releases import RELEASES

REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",
}


def check_host() -> None:
    """Fail with one line when this machine cannot run the lab."""
    if os.geteuid() != 0:
        raise LabError("needs root to create the bridge and boot nodes: run it as root (e.g. sudo lab up)")
    for tool, package in REQUIRED_TOOLS.items():
        if not shutil.which(tool):
            raise LabError(f"{tool} not found: apt-get install {package} (./dev setup installs all of them)")


def _log(message: str) -> None:
    print(f"lab: {message}", flush=True)


def _save_nodes(settings: LabSettings, wanted: list[LabNode]) -> None:
    data = [{"name": n.name, "address": n.address} for n in wanted]
    (settings.state_dir / "nodes.json").write_text(json.dumps(data, indent=1))


def _saved_nodes(settings: LabSettings) -> list[LabNode]:
    try:
        saved = json.loads((settings.state_dir / "nodes.json").read_text())
    except FileNotFoundError:
        return []
    return [LabNode(**item, release=nodes.booted_release(settings, item["name"])) for item in saved]


def up(inventory: Path, log=_log) -> list[LabNode]:
    check_host()
    settings = lab_settings()
    wanted = read_nodes(Path(inventory))
    for node in wanted:
        if node.address not in map(str, settings.subnet.hosts()) or node.address == str(settings.gateway):
            raise LabError(f"{inventory}: {node.name}'s address {node.address} is not a node address in the "
                           f"lab subnet {settings.subnet}")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.state_dir.chmod(0o700)  # holds the client's private key

    bases = {release: image.ensure_base_image(settings.cache_dir, RELEASES[release], log)
             for release in sorted({node.release for node in wanted})}
    wanted_names = {node.name for node in wanted}
    # A node's upper layer only fits the base image it was made on: another release means a new node.
    wanted_release = {node.name: node.release for node in wanted}
    for name in nodes.known_nodes(settings):
        if name not in wanted_names:
            log(f"removing {name}: not in {inventory}")
        elif nodes.booted_release(settings, name) != wanted_release[name]:
            log(f"recreating {name}: its debian_release changed")
        else:
            continue
        nodes.stop(settings, name)
        nodes.remove(settings, name)

    network.ensure_bridge(settings)
    mirrors = network.mirror_addresses()
    network.ensure_mirror_nat(settings, mirrors)
    network.raise_inotify_limit(len(wanted))
    client_key = ssh.ensure_client_key(settings)
    running = {node for node in wanted if nodes.is_up(settings, node.name)}
    for node in [node for node in running if nodes.booted_runtime(settings, node.name) != node.runtime]:
        # nspawn's flags and the node's boot units differ by runtime: boot it again, keeping its disk.
        log(f"restarting {node.name}: its runtime changed to {node.runtime}")
        nodes.stop(settings, node.name)
        running.discard(node)
    # A running node's upper layer is mounted: leave it alone (overlayfs forbids changing it under
    # the mount) and only read its host key.
    host_keys = {node: nodes.host_public_key(settings, node) if node in running
                 else nodes.prepare(settings, node, wanted, client_key, mirrors) for node in wanted}
    ssh.write_client_files(settings, host_keys)
    _save_nodes(settings, wanted)

    started = [node for node in wanted if node not in running]
    for node in started:
        nodes.start(settings, node, bases[node.release])
    if started:
        log(f"booting {', '.join(n.name for n in started)}")
    with ThreadPoolExecutor(max_workers=16) as pool:
        states = dict(zip(wanted, pool.map(lambda n: _wait_ready(settings, n), wanted)))
    not_ready = [f"{node.name} ({state or 'no ssh'})" for node, state in states.items()
                 if state not in ("running", "degraded")]
    if not_ready:
        raise LabError(f"nodes not ready: {', '.join(not_ready)}; see {settings.state_dir}/nodes/<name>/console.log")
    for node, state in states.items():
        if state == "degraded":
            log(f"{node.name} is up but degraded: lab ssh {node.name} systemctl --failed")
    log(f"{len(wanted)} nodes up; ssh config: {settings.ssh_config}")
    return wanted


def recreate(inventory: Path, name: str, log=_log) -> list[LabNode]:
    """Destroy one node (its upper layer: everything deployed or written on it) and boot it afresh,
    with a new host key, as a replaced machine would come back; the other nodes keep running."""
    check_host()
    settings = lab_settings()
    if name not in {node.name for node in read_nodes(Path(inventory))}:
        raise LabError(f"{inventory}: no lab host named {name!r}")
    ssh.close_master_connections(settings, [name])
    nodes.stop(settings, name)
    nodes.remove(settings, name)
    log(f"destroyed {name}")
    return up(inventory, log)


def _wait_ready(settings: LabSettings, node: LabNode) -> str | None:
    deadline = time.monotonic() + ssh.READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not nodes.is_up(settings, node.name):
            return "down"
        state = ssh.system_state(settings, node.name, wait=True)
        if state is not None:
            return state
        time.sleep(0.2)  # sshd not listening yet
    return None


def down(purge: bool = False, log=_log) -> None:
    check_host()
    settings = lab_settings()
    names = nodes.known_nodes(settings)
    ssh.close_master_connections(settings, names)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda name: nodes.stop(settings, name), names))
    network.remove_mirror_nat(settings)
    network.remove_bridge(settings)
    nodes.remove_cgroup_parents(settings)
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    if purge:
        shutil.rmtree(settings.cache_dir, ignore_errors=True)
    if names:
        log(f"stopped and removed {', '.join(names)}")


@dataclass
class NodeStatus:
    name: str
    address: str
    release: int
    state: str  # running / degraded / starting / ... as systemd says, or down
    ssh: bool


def status() -> list[NodeStatus]:
    settings = lab_settings()
    saved = _saved_nodes(settings)

    def one(node: LabNode) -> NodeStatus:
        if not nodes.is_up(settings, node.name):
            return NodeStatus(node.name, node.address, node.release, "down", False)
        state = ssh.system_state(settings, node.name)
        return NodeStatus(node.name, node.address, node.release, state or "booted", state is not None)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, saved))


def is_up(inventory: Path) -> bool:
    """True when every node of the inventory runs and answers over ssh."""
    try:
        wanted = {node.name for node in read_nodes(Path(inventory))}
    except LabError:
        return False
    states = {s.name: s for s in status()}
    return all(name in states and states[name].ssh and states[name].state in ("running", "degraded")
               for name in wanted)
