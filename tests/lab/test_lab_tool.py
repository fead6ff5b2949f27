"""The `lab` tool: one-line refusals, and a throwaway two-node lab of its own for the life cycle.

The life-cycle test runs on its own subnet, bridge and state folder (only the base image cache
is shared), so it never disturbs the reference lab the other lab tests use.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import pytest

from homelab.lab.errors import LabError
from homelab.lab.inventory import read_nodes
from homelab.lab.nodes import machine_name
from homelab.lab.settings import DEFAULT_SUBNET, lab_settings
from tests.conftest import REPO, VENV_BIN, scratch_lab_test

LAB = str(VENV_BIN / "lab")


def write_inventory(folder: Path, text: str) -> Path:
    path = folder / "inventory.py"
    path.write_text("from homelab.lab.settings import lab_host\n" + text)
    return path


def test_default_subnet_is_not_a_home_network():
    assert DEFAULT_SUBNET != "192.168.1.0/24"
    assert not lab_settings().subnet.overlaps(__import__("ipaddress").ip_network("192.168.1.0/24"))


def test_reference_lab_has_the_reference_names_on_their_own_addresses():
    nodes = read_nodes(REPO / "inventory" / "lab.py")
    assert [n.name for n in nodes] == ["master-node", "worker-node-11", "worker-node-12", "worker-node-14"]
    assert len({n.address for n in nodes}) == 4
    assert all(n.address.startswith("10.77.0.") for n in nodes)


@pytest.mark.parametrize("text, expected", [
    ("nodes = [lab_host('a', 10), lab_host('b', 10)]\n", "address 10.77.0.10 is given to more than one host"),
    ("nodes = [('plain-host', {'ssh_hostname': '10.0.0.1'})]\n", "no lab hosts in it"),
    ("nodes = [lab_host('bad_name!', 10)]\n", "host 'bad_name!': expected a hostname"),
    ("raise RuntimeError('boom')\n", "cannot be loaded: RuntimeError: boom"),
])
def test_bad_inventory_is_one_clear_line(tmp_path, text, expected):
    with pytest.raises(LabError, match=expected.replace("(", r"\(")):
        read_nodes(write_inventory(tmp_path, text))


def run_lab(*args: str, env: dict | None = None, user: str | None = None, timeout: int = 300):
    command = [LAB, *args]
    if user:
        command = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *command]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_without_root_it_says_so_in_one_line(monkeypatch, capsys):
    from homelab.lab import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["up"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lab: needs root")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first; this needs root to reach the tool check")
def test_without_systemd_nspawn_it_names_the_package(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH where nothing of the lab's tools is found
    result = run_lab("up", env={"PATH": str(tmp_path / "bin")})
    assert result.returncode != 0
    assert result.stderr.strip() == \
        "lab: systemd-nspawn not found: apt-get install systemd-container (./dev setup installs all of them)"


# --- life cycle on a lab of its own -------------------------------------------------------------

SCRATCH = {"HOMELAB_LAB_SUBNET": "10.78.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabtest0"}


def ssh_out(env, name, command):
    result = run_lab("ssh", name, command, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def nspawn_pids(name):
    machine = machine_name(dataclasses.replace(lab_settings(), bridge=SCRATCH["HOMELAB_LAB_BRIDGE"]), name)
    out = subprocess.run(["pgrep", "-f", f"^systemd-nspawn .*-M {machine} "], capture_output=True, text=True).stdout
    return sorted(out.split())


@scratch_lab_test
def test_life_cycle_is_repeatable_and_survives_leftovers(tmp_path):
    env = {**SCRATCH, "HOMELAB_LAB_STATE": str(tmp_path / "state")}
    inventory = write_inventory(tmp_path, "nodes = [lab_host('t-node-a', 10), lab_host('t-node-b', 11)]\n")
    inotify = Path("/proc/sys/fs/inotify/max_user_instances").read_text()
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    # A leftover bridge without its address (a crash between creating and configuring it).
    subprocess.run(["ip", "link", "add", SCRATCH["HOMELAB_LAB_BRIDGE"], "type", "bridge"], capture_output=True)
    try:
        first = run_lab("up", str(inventory), env=env)
        assert first.returncode == 0, first.stderr

        status = run_lab("status", env=env)
        assert status.returncode == 0
        rows = [line.split() for line in status.stdout.splitlines()[1:]]
        assert rows == [["t-node-a", "10.78.0.10", "Debian", "13", "running", "yes"],
                        ["t-node-b", "10.78.0.11", "Debian", "13", "running", "yes"]]

        # Each node is itself: hostname, address, machine-id, host key (strict checking is on).
        ids = set()
        for name, address in (("t-node-a", "10.78.0.10"), ("t-node-b", "10.78.0.11")):
            assert ssh_out(env, name, "hostname") == name
            assert address in ssh_out(env, name, "ip -4 -o addr show host0")
            ids.add(ssh_out(env, name, "cat /etc/machine-id"))
        assert len(ids) == 2
        ssh_config = (tmp_path / "state" / "ssh_config").read_text()
        assert "StrictHostKeyChecking yes" in ssh_config
        # The other node is reachable by name and address, Debian's mirror too; nothing else is.
        assert ssh_out(env, "t-node-a", "getent hosts t-node-b").split()[0] == "10.78.0.11"
        assert ssh_out(env, "t-node-a", "apt-get update >/dev/null && echo fetched") == "fetched"
        assert run_lab("ssh", "t-node-a", "curl -s -m 3 http://pypi.org/ || python3 -c "
                       "\"import socket; socket.create_connection(('151.101.0.223', 80), 3)\"",
                       env=env).returncode != 0

        # Up again: the same nodes keep running, nothing restarted.
        pids = {name: nspawn_pids(name) for name in ("t-node-a", "t-node-b")}
        assert run_lab("up", str(inventory), env=env).returncode == 0
        assert {name: nspawn_pids(name) for name in pids} == pids

        # A node that reboots comes back, as a machine does (upgrades reboot nodes).
        # The node's PID 1 start time (nodes share this machine's kernel and so its boot_id).
        booted = ssh_out(env, "t-node-b", "cut -d' ' -f22 /proc/1/stat; cat /etc/machine-id").split()
        run_lab("ssh", "t-node-b", "systemctl reboot", env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and nspawn_pids("t-node-b") in ([], pids["t-node-b"]):
            time.sleep(0.2)
        assert nspawn_pids("t-node-b") not in ([], pids["t-node-b"])
        assert run_lab("up", str(inventory), env=env).returncode == 0  # waits for it to be ready
        assert nspawn_pids("t-node-b") not in ([], pids["t-node-b"])
        rebooted = ssh_out(env, "t-node-b", "cut -d' ' -f22 /proc/1/stat; cat /etc/machine-id").split()
        assert rebooted[1] == booted[1] and rebooted[0] != booted[0]
        pids["t-node-b"] = nspawn_pids("t-node-b")

        # A node killed hard leaves a stale pid file and cgroups; up brings it back, leaves the other.
        subprocess.run(["kill", "-9", *pids["t-node-a"]])
        again = run_lab("up", str(inventory), env=env)
        assert again.returncode == 0, again.stderr
        assert nspawn_pids("t-node-a") and nspawn_pids("t-node-a") != pids["t-node-a"]
        assert nspawn_pids("t-node-b") == pids["t-node-b"]
        assert ssh_out(env, "t-node-a", "systemctl is-system-running") in ("running", "degraded")
    finally:
        down = run_lab("down", env=env)
    assert down.returncode == 0, down.stderr
    assert nspawn_pids("t-node-a") == nspawn_pids("t-node-b") == []
    assert subprocess.run(["ip", "link", "show", SCRATCH["HOMELAB_LAB_BRIDGE"]], capture_output=True).returncode != 0
    assert not (tmp_path / "state").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/homelab-lab/{SCRATCH['HOMELAB_LAB_BRIDGE']}"))
    assert Path("/proc/sys/fs/inotify/max_user_instances").read_text() == inotify
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"homelab_lab_{SCRATCH['HOMELAB_LAB_BRIDGE']}" not in tables
    assert run_lab("down", env=env).returncode == 0  # nothing left to remove is not an error
