"""Nodes are reached with the access the inventory gives a deploy: address, user, key, known hosts."""

from __future__ import annotations

from pathlib import Path

from homelab.backup.remote import Remote
from homelab.lab.settings import lab_settings
from homelab.topology import Topology
from tests.local_monitoring import loopback_inventory

LAB = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"


def test_a_lab_node_is_reached_with_the_lab_key_and_its_known_hosts_strictly(tmp_path):
    topology = Topology.load(LAB)
    settings = lab_settings()
    argv = Remote(topology, "worker-node-12", tmp_path).command("true")
    assert argv[0] == "ssh"
    assert f"-oIdentityFile={settings.client_key}" in argv and "-oIdentitiesOnly=yes" in argv
    assert f"-oUserKnownHostsFile={settings.known_hosts}" in argv
    assert "-oStrictHostKeyChecking=yes" in argv and "-oBatchMode=yes" in argv
    assert argv[-2] == f"root@{topology.address('worker-node-12')}"
    assert argv[-1] == "sh -c true"


def test_a_login_other_than_root_goes_through_sudo(tmp_path):
    inventory = loopback_inventory(tmp_path)
    text = inventory.read_text().replace("'ssh_hostname': '127.0.0.1'", "'ssh_hostname': '127.0.0.1', 'ssh_user': 'ops'")
    inventory.write_text(text)
    argv = Remote(Topology.load(inventory), "worker-node-12", tmp_path).command("systemctl stop x")
    assert argv[-2:] == ["ops@127.0.0.1", "sudo -n sh -c 'systemctl stop x'"]
