"""Two labs on one machine: each finds only its own nodes, and neither undoes a machine setting
the other still needs.

Both labs run a node of the same name, each on its own bridge, subnet and state folder. They run
in a network namespace of their own, so the test can start from ip_forward off (as on a machine
with no lab) without touching the shared lab's forwarding; the namespace has no way out, so its
/etc/hosts (in a mount namespace of the labs' own) gives Debian's mirror a documentation address.
Processes and cgroups are machine-wide, which is where labs used to find each other's nodes.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from homelab.lab import nodes
from homelab.lab.image import host_mirror
from homelab.lab.settings import lab_settings
from tests.conftest import REPO, VENV_BIN, lab_unavailable_reason
from tests.lab.test_lab_tool import write_inventory

LABS = {
    "a": {"HOMELAB_LAB_SUBNET": "10.81.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabiso-a"},
    "b": {"HOMELAB_LAB_SUBNET": "10.82.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabiso-b"},
}
NODE = "t-node"
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


@pytest.fixture
def netns(tmp_path):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = f"hlabtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    hosts = tmp_path / "hosts"
    mirror = host_mirror().split("/")[2]
    hosts.write_text(f"127.0.0.1 localhost\n192.0.2.80 {mirror}\n")
    yield name, hosts
    subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(netns, *command: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    name, hosts = netns
    wrapped = ["nsenter", f"--net=/run/netns/{name}", "unshare", "--mount", "--propagation", "private",
               "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *command]
    return subprocess.run(wrapped, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def lab_env(tmp_path: Path, lab: str) -> dict:
    return {**LABS[lab], "HOMELAB_LAB_STATE": str(tmp_path / lab)}


def lab(netns, tmp_path, which: str, *args: str) -> subprocess.CompletedProcess:
    return in_netns(netns, str(VENV_BIN / "lab"), *args, env=lab_env(tmp_path, which))


def forwarding(netns) -> str:
    return in_netns(netns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def node_pid(tmp_path, which: str) -> int | None:
    """The pid of lab ``which``'s node's systemd-nspawn."""
    settings = dataclasses.replace(lab_settings(), state_dir=tmp_path / which, bridge=LABS[which]["HOMELAB_LAB_BRIDGE"])
    return nodes.running_pid(settings, NODE)


def status(netns, tmp_path, which: str) -> list[str]:
    return lab(netns, tmp_path, which, "status").stdout.splitlines()[1].split()


@pytest.mark.lab
@pytest.mark.slow
def test_labs_with_the_same_node_names_leave_each_other_alone(netns, tmp_path):
    assert in_netns(netns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward").returncode == 0
    inotify_before = INOTIFY.read_text()
    inventories = {}
    for which in LABS:
        (tmp_path / which).mkdir()
        inventories[which] = write_inventory(tmp_path / which, f"nodes = [lab_host({NODE!r}, 10)]\n")
    try:
        for which in LABS:
            up = lab(netns, tmp_path, which, "up", str(inventories[which]))
            assert up.returncode == 0, up.stderr
        assert forwarding(netns) == "1"
        for which, settings in LABS.items():
            address = settings["HOMELAB_LAB_SUBNET"].replace("0/24", "10")
            assert status(netns, tmp_path, which)[:5] == [NODE, address, "Debian", "13", "running"]
            shown = lab(netns, tmp_path, which, "ssh", NODE, "ip -4 -o addr show host0").stdout
            assert f" {address}/" in shown
        b_pid = node_pid(tmp_path, "b")

        # Lab a's node dies: lab a sees it down (not lab b's node of that name), and brings it
        # back without touching lab b's.
        a_pid = node_pid(tmp_path, "a")
        os.kill(a_pid, 9)
        deadline = time.monotonic() + 10
        while status(netns, tmp_path, "a")[4] != "down" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(netns, tmp_path, "a")[4] == "down"
        assert status(netns, tmp_path, "b")[4] == "running"
        again = lab(netns, tmp_path, "a", "up", str(inventories["a"]))
        assert again.returncode == 0, again.stderr
        assert node_pid(tmp_path, "a") != a_pid
        assert node_pid(tmp_path, "b") == b_pid

        # Lab a goes down: lab b's node keeps running and keeps its way out (forwarding stays on).
        down = lab(netns, tmp_path, "a", "down")
        assert down.returncode == 0, down.stderr
        assert node_pid(tmp_path, "b") == b_pid
        assert lab(netns, tmp_path, "b", "ssh", NODE, "systemctl is-system-running").stdout.strip() in (
            "running", "degraded")
        assert forwarding(netns) == "1"

        # The last lab down restores what the first one changed.
        down = lab(netns, tmp_path, "b", "down")
        assert down.returncode == 0, down.stderr
        assert forwarding(netns) == "0"
        assert INOTIFY.read_text() == inotify_before
        assert not list(Path("/sys/fs/cgroup").glob("*/homelab-lab/hlabiso-*"))
    finally:
        for which in LABS:
            lab(netns, tmp_path, which, "down")
