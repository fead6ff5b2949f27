"""Lab nodes whose runtime is `container`: how the lab tool finds them and what it gives them.

Only those nodes may make keyrings (runc joins one per container) and get their cgroup v1
controllers made writable at boot; the other nodes keep nspawn's defaults, since writable
controllers are the host's own hierarchies. Booting such a node and running containers on it is
the container lab test (docs/containers.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from homelab.lab import nodes
from homelab.lab.errors import LabError
from homelab.lab.inventory import LabNode, read_nodes
from homelab.lab.settings import lab_settings
from tests.lab.test_lab_tool import write_inventory

UNIT = Path("etc/systemd/system") / nodes.CGROUP_UNIT
ENABLED = Path("etc/systemd/system/multi-user.target.wants") / nodes.CGROUP_UNIT


def group_data(folder: Path, files: dict[str, str]) -> None:
    (folder / "group_data").mkdir()
    for name, text in files.items():
        (folder / "group_data" / f"{name}.py").write_text(text)


def runtimes(inventory: Path) -> dict[str, str]:
    return {node.name: node.runtime for node in read_nodes(inventory)}


def test_runtime_comes_from_host_data_then_group_data(tmp_path):
    inventory = write_inventory(tmp_path, (
        "toy_redis = [lab_host('boxed', 10), lab_host('plain', 11, runtime='systemd')]\n"
        "loki = [lab_host('other', 12)]\n"
    ))
    assert runtimes(inventory) == {"boxed": "systemd", "plain": "systemd", "other": "systemd"}
    group_data(tmp_path, {"toy_redis": 'runtime = "container"\n'})
    # Host data wins over its group's, as in pyinfra.
    assert runtimes(inventory) == {"boxed": "container", "plain": "systemd", "other": "systemd"}


def test_runtime_for_everyone_in_group_data_all(tmp_path):
    inventory = write_inventory(tmp_path, "nodes = [lab_host('a-node', 10)]\n")
    group_data(tmp_path, {"all": 'runtime = "container"\n'})
    assert runtimes(inventory) == {"a-node": "container"}


@pytest.mark.parametrize("where", ["host", "group"])
def test_an_unknown_runtime_is_one_clear_line(tmp_path, where):
    if where == "host":
        inventory = write_inventory(tmp_path, "nodes = [lab_host('a-node', 10, runtime='docker')]\n")
        source = inventory
    else:
        inventory = write_inventory(tmp_path, "nodes = [lab_host('a-node', 10)]\n")
        group_data(tmp_path, {"nodes": 'runtime = "docker"\n'})
        source = tmp_path / "group_data" / "nodes.py"
    with pytest.raises(LabError) as refused:
        read_nodes(inventory)
    assert str(refused.value) == f"{source}: host 'a-node': runtime: expected one of systemd, container, got 'docker'"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMELAB_LAB_STATE", str(tmp_path / "state"))
    return lab_settings()


def prepare(settings, runtime: str) -> Path:
    node = LabNode("a-node", "10.77.0.10", runtime=runtime)
    nodes.prepare(settings, node, [node], "ssh-ed25519 AAAA test\n", {})
    return nodes.node_dir(settings, node.name) / "upper"


def test_only_container_nodes_boot_with_keyrings_allowed(settings, tmp_path):
    base = tmp_path / "base"
    plain = nodes.nspawn_command(settings, LabNode("a", "10.77.0.10"), base)
    boxed = nodes.nspawn_command(settings, LabNode("a", "10.77.0.10", runtime="container"), base)
    assert not [flag for flag in plain if flag.startswith("--system-call-filter")]
    # No extra capability: a container's open-file limit stays within the node's (roles/container_runtime).
    assert set(boxed) - set(plain) == {"--system-call-filter=add_key keyctl request_key"}


def test_cgroup_unit_follows_the_runtime(settings):
    upper = prepare(settings, "container")
    assert (upper / UNIT).is_file()
    assert os.readlink(upper / ENABLED) == f"/{UNIT}"
    script = upper / nodes.CGROUP_SCRIPT.lstrip("/")
    assert os.access(script, os.X_OK)
    assert nodes.booted_runtime(settings, "a-node") == "container"
    # Back to systemd: the node boots without writable controllers.
    upper = prepare(settings, "systemd")
    assert not (upper / UNIT).exists() and not (upper / ENABLED).is_symlink()
    assert not script.exists()
    assert nodes.booted_runtime(settings, "a-node") == "systemd"


def test_cgroup_script_remounts_exactly_the_read_only_controllers(tmp_path):
    """The script's selection run on a mount table like nspawn's, with `mount` standing in."""
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup ro,nosuid,nodev,noexec,relatime,cpu 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup ro,nosuid,nodev,noexec,relatime,memory 0 0\n"
        "cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,name=systemd 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mount").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    (bin_dir / "mount").chmod(0o755)
    script = nodes.CGROUP_SCRIPT_TEXT.replace("/proc/self/mounts", str(mounts))
    subprocess.run(["sh", "-c", script], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert (tmp_path / "calls").read_text().splitlines() == [
        "-o remount,bind,rw /sys/fs/cgroup/cpu", "-o remount,bind,rw /sys/fs/cgroup/memory"]
