"""Nodes of different Debian releases in one lab, one deploy: each gets its release's packages and
wheels for its own Python (cp311 on Debian 12, cp313 on Debian 13) built on this control machine.

The reference lab (inventory/lab.py) runs the whole stack on the default release, Debian 13; this
test boots a lab of its own (own subnet, bridge and state, like test_lab_tool's life cycle) with a
Debian 12 and a Debian 13 node running the base roles and toy-redis.
"""

from __future__ import annotations

import subprocess

import pytest
import redis

from homelab.lab.errors import LabError
from homelab.lab.inventory import read_nodes
from homelab.releases import DEFAULT_RELEASE, RELEASES
from homelab.topology import Topology
from homelab.vault import load_vault
from roles.python_app import WheelTarget, build_wheels
from roles.toy_redis import APP
from tests.conftest import REPO, run_pyinfra, scratch_lab_test
from tests.lab.test_lab_tool import run_lab, ssh_out, write_inventory

MIXED = {"HOMELAB_LAB_SUBNET": "10.80.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabmix0"}
NODES = {"oldstable-node": (10, 12), "stable-node": (11, 13)}
ROLES = "base,tuning,node_exporter,toy_redis"
# Group data holds only what differs from the role's defaults: the port is the validated settings'.
TOY_REDIS_PORT = Topology.load(REPO / "inventory" / "homelab.py").port("worker-node-12", "toy_redis", "resp")


def test_lab_nodes_default_to_debian_13():
    assert DEFAULT_RELEASE == 13 and RELEASES[13].codename == "trixie"
    assert {node.release for node in read_nodes(REPO / "inventory" / "lab.py")} == {DEFAULT_RELEASE}


@pytest.mark.parametrize("value", ["'13'", "11", "True"])
def test_an_unknown_release_is_one_clear_line(tmp_path, value):
    inventory = write_inventory(tmp_path, f"nodes = [lab_host('a-node', 10, debian_release={value})]\n")
    with pytest.raises(LabError) as failure:
        read_nodes(inventory)
    assert str(failure.value) == (f"{inventory}: host 'a-node': debian_release: expected one of 12 (bookworm), "
                                  f"13 (trixie), got {eval(value)!r}")


@scratch_lab_test
def test_debian_12_and_13_nodes_run_the_base_roles_and_toy_redis_from_one_deploy(tmp_path):
    env = {**MIXED, "HOMELAB_LAB_STATE": str(tmp_path / "state")}
    hosts = ", ".join(f"lab_host({name!r}, {index}, debian_release={release})"
                      for name, (index, release) in NODES.items())
    inventory = write_inventory(tmp_path, f"toy_redis = [{hosts}]\n")
    deploy = ("deploys/all.py", "--group-data", str(REPO / "inventory" / "group_data"),
              "--data", f"only_roles={ROLES}")
    password = load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")["toy_redis_password"]
    try:
        up = run_lab("up", str(inventory), env=env, timeout=900)
        assert up.returncode == 0, up.stderr
        first = run_pyinfra(*deploy, inventory=inventory, env=env, timeout=1500)
        assert first.returncode == 0 and not first.failed(), first.stderr[-4000:]

        for name, (index, release) in NODES.items():
            debian = RELEASES[release]
            assert ssh_out(env, name, ". /etc/os-release && echo $VERSION_CODENAME") == debian.codename
            assert ssh_out(env, name, "python3 --version").startswith(f"Python {debian.python}.")
            # The venv runs wheels made for this node's Python, not the control machine's.
            target = WheelTarget.for_release(debian, ssh_out(env, name, "uname -m"))
            assert ssh_out(env, name, f"readlink {APP.current}") == f"venvs/{build_wheels(APP.source_dir, target).digest}"
            assert ssh_out(env, name, f"{APP.current}/bin/python -c 'import hiredis, uvloop; print(1)'") == "1"
            assert ssh_out(env, name, "systemctl is-active toy-redis prometheus-node-exporter").split() == ["active"] * 2
            client = redis.Redis(host=f"10.80.0.{index}", port=TOY_REDIS_PORT, password=password, socket_timeout=5)
            try:
                assert client.set("release", debian.codename)
                assert client.get("release") == debian.codename.encode()
            finally:
                client.close()

        again = run_pyinfra(*deploy, inventory=inventory, env=env, timeout=900)
        assert again.returncode == 0, again.stderr[-4000:]
        assert again.changed() == []
    finally:
        down = run_lab("down", env=env)
    assert down.returncode == 0, down.stderr
    assert subprocess.run(["ip", "link", "show", MIXED["HOMELAB_LAB_BRIDGE"]], capture_output=True).returncode != 0
