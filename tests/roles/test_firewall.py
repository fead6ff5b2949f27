"""The node firewall (roles/firewall) rendered from the topology, checked by nft, and loaded into
network namespaces on this machine: a listed caller gets through, anyone else is dropped and
counted, a flooding caller is cut off, and the drop counters reach node_exporter's text format."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pyinfra.api.inventory import Inventory

from homelab.config import ConfigError, settings_from_data
from homelab.topology import CONTROL, EXTERNAL, FLOWS, Topology
from roles.firewall import (METRIC, OutsideCallers, Settings, Sources, counter_labels, render_metrics_script,
                            render_ruleset, service_ports)
from roles.node_exporter import Settings as NodeExporterSettings
from roles.toy_redis import Settings as ToyRedisSettings
from tests.roles.test_prometheus import LAB, LAB_ADDRESS, LAB_TOPOLOGY

CONTROL_ADDRESS = "10.77.0.1"
NODE_PORT = NodeExporterSettings().listen_port
UNLISTED_PORT = 4999  # a port no role listens on
REDIS = ToyRedisSettings()


def lab_ruleset(host: str, settings: Settings = Settings(), topology: Topology = LAB_TOPOLOGY) -> str:
    return render_ruleset(topology, host, settings, Sources.of([CONTROL_ADDRESS]), 22)


def accepted_from(ruleset: str, port: int) -> set[str]:
    """Addresses whose new connections to ``port`` the input chain lets in (to accept or limits)."""
    found = set()
    for line in ruleset.splitlines():
        match = re.search(rf"tcp dport {port} ip6? saddr \{{ (.*) \}} (accept|goto limit_\w+)$", line.strip())
        if match:
            found |= {address.removesuffix("/32") for address in match.group(1).split(", ")}
    return found


def input_rules(ruleset: str) -> list[str]:
    chain = ruleset.split("chain input {", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in chain.splitlines()
            if line.strip() and not line.strip().startswith("#") and not line.strip().startswith("type ")]


def test_each_port_accepts_only_the_hosts_the_topology_says_call_it():
    for host in LAB_TOPOLOGY.hosts:
        ruleset = lab_ruleset(host)
        for inbound in LAB_TOPOLOGY.inbound(host):
            expected = {LAB_ADDRESS[caller] for caller in inbound.callers}
            expected |= {CONTROL_ADDRESS} if CONTROL in inbound.parties else set()
            expected |= {str(network) for party in inbound.parties if party != CONTROL
                         for network in getattr(Settings().outside_callers, party)}
            assert accepted_from(ruleset, inbound.port) == expected, (host, inbound)
            assert f"tcp dport {inbound.port} counter name dropped_{inbound.role}_{inbound.listener} drop" in ruleset


def test_the_control_machine_reaches_what_its_commands_query():
    """`homelab status` asks Prometheus, `homelab maintenance` Alertmanager: both accept it."""
    for role in ("prometheus", "alertmanager"):
        endpoint = LAB_TOPOLOGY.endpoint(role)
        assert CONTROL_ADDRESS in accepted_from(lab_ruleset(endpoint.host), endpoint.port)
    blackbox = LAB_TOPOLOGY.endpoint("blackbox")  # it probes any URL it is asked: Prometheus only
    assert CONTROL_ADDRESS not in accepted_from(lab_ruleset(blackbox.host), blackbox.port)


def test_ssh_from_the_control_machine_comes_before_any_other_rule():
    rules = input_rules(lab_ruleset("worker-node-14"))
    assert rules[0] == f"tcp dport 22 ip saddr {{ {CONTROL_ADDRESS}/32 }} accept"
    assert rules[-1] == "counter name dropped_other drop"
    assert "policy drop;" in lab_ruleset("worker-node-14")


def test_adding_a_node_opens_every_port_it_calls_on_every_host():
    hosts = {host.name: dict(host.data.dict()) for host in LAB}
    groups = {name: [host.name for host in LAB.get_group(name)] for name in LAB.groups}
    hosts["worker-node-15"] = {**hosts["worker-node-14"], "ssh_hostname": "10.77.0.15"}
    groups["prometheus"] = groups["prometheus"] + ["worker-node-15"]
    grown = Topology(Inventory((list(hosts.items()), {}), **{name: (members, {}) for name, members in groups.items()}))
    for host in LAB_TOPOLOGY.hosts:
        assert "10.77.0.15" not in accepted_from(lab_ruleset(host), NODE_PORT)
    for host in grown.hosts:
        assert "10.77.0.15" in accepted_from(lab_ruleset(host, topology=grown), NODE_PORT), host


def test_outside_callers_are_configured_per_party_and_limited_like_hosts():
    ruleset = lab_ruleset("worker-node-12", Settings(outside_callers=OutsideCallers(clients=["192.0.2.0/24"])))
    assert accepted_from(ruleset, REDIS.port) == {CONTROL_ADDRESS, "192.0.2.0/24"}
    assert f"tcp dport {REDIS.port} ip saddr {{ 192.0.2.0/24 }} goto limit_toy_redis_resp" in ruleset
    parties = {flow.source for flow in FLOWS if flow.source in EXTERNAL and flow.listener} - {CONTROL}
    assert set(OutsideCallers.model_fields) == parties


def test_limits_come_from_the_settings():
    settings = Settings(connections_per_source=7, new_connections_per_second=3, new_connections_burst=5)
    ruleset = lab_ruleset("worker-node-12", settings)
    assert "ip saddr . tcp dport ct count over 7 }" in ruleset
    assert "ip saddr . tcp dport limit rate over 3/second burst 5 packets }" in ruleset


def test_bad_settings_give_one_line_errors():
    def error(data: dict) -> str:
        with pytest.raises(ConfigError) as raised:
            settings_from_data("worker-node-12", "firewall", Settings, data)
        return str(raised.value)

    assert error({"control_addresses": ["10.77.0.300"]}).startswith(
        "inventory data for worker-node-12: firewall.control_addresses.0: ")
    assert error({"connections_per_source": 0}).startswith("inventory data for worker-node-12: firewall.connections_per_source: ")
    assert error({"outside_callers": {"guests": []}}).startswith("inventory data for worker-node-12: firewall.outside_callers.guests: ")
    with pytest.raises(ConfigError, match="firewall.control_addresses: expected at least one address"):
        render_ruleset(LAB_TOPOLOGY, "worker-node-12", Settings(), Sources(), 22)


def test_a_port_claimed_twice_is_refused():
    hosts = {host.name: dict(host.data.dict()) for host in LAB}
    hosts["worker-node-12"]["toy_redis"] = {"metrics_port": NODE_PORT}
    groups = {name: [host.name for host in LAB.get_group(name)] for name in LAB.groups}
    clash = Topology(Inventory((list(hosts.items()), {}), **{name: (members, {}) for name, members in groups.items()}))
    with pytest.raises(ConfigError, match=f"port {NODE_PORT} is also node_exporter metrics's"):
        lab_ruleset("worker-node-12", topology=clash)


# --- the rendered ruleset in the kernel: network namespaces on this machine ----------------------

def needs_netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "loading a ruleset into a network namespace needs root"
    if not (shutil.which("nft") and shutil.which("ip")):
        return "needs nft and ip (apt-get install nftables iproute2)"
    return None


needs_netns = pytest.mark.skipif(needs_netns_reason() is not None, reason=str(needs_netns_reason()))


def run(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60, **kwargs)


# The namespaced "node" and its peer: a caller, a stranger and the control machine, each an address
# on the peer's side of one veth.
NODE_ADDRESS, CALLER, STRANGER, CONTROL_PEER = "10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5"

CONNECT = """
import socket, sys, time
source, address, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
held, results = [], []
for _ in range(count):
    s = socket.socket()
    s.settimeout(1.5)
    s.bind((source, 0))
    try:
        s.connect((address, port)); held.append(s); results.append("ok")
    except ConnectionRefusedError:
        results.append("refused")
    except OSError:
        results.append("timeout")
print(" ".join(results))
"""


# A service: holds each connection until its client closes it, then closes its side too.
LISTEN = """
import socketserver, sys
class Hold(socketserver.BaseRequestHandler):
    def handle(self):
        while self.request.recv(4096):
            pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), Hold).serve_forever()
"""


@pytest.fixture
def netns():
    """Two network namespaces joined by a veth; yields (node, peer) names, removes both."""
    tag = uuid.uuid4().hex[:6]
    node, peer = f"hlfw-node-{tag}", f"hlfw-peer-{tag}"
    run("ip", "netns", "add", node)
    run("ip", "netns", "add", peer)
    try:
        run("ip", "link", "add", f"fwn{tag}", "netns", node, "type", "veth", "peer", "name", f"fwp{tag}", "netns", peer)
        run("ip", "-n", node, "addr", "add", f"{NODE_ADDRESS}/24", "dev", f"fwn{tag}")
        for address in (CALLER, STRANGER, CONTROL_PEER):
            run("ip", "-n", peer, "addr", "add", f"{address}/24", "dev", f"fwp{tag}")
        for namespace, device in ((node, f"fwn{tag}"), (peer, f"fwp{tag}")):
            run("ip", "-n", namespace, "link", "set", device, "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        yield node, peer
    finally:
        run("ip", "netns", "del", node, check=False)
        run("ip", "netns", "del", peer, check=False)


def namespaced_topology() -> Topology:
    """worker-node-12 (node_exporter, toy-redis) called by Prometheus on worker-node-14."""
    hosts = [("worker-node-12", {"ssh_hostname": NODE_ADDRESS}), ("worker-node-14", {"ssh_hostname": CALLER})]
    return Topology(Inventory((hosts, {}), toy_redis=(["worker-node-12"], {}), prometheus=(["worker-node-14"], {})))


@needs_netns
def test_the_ruleset_in_a_namespace_lets_callers_in_drops_strangers_and_limits_floods(netns, tmp_path):
    node, peer = netns
    topology = namespaced_topology()
    settings = Settings(connections_per_source=3)
    ruleset = tmp_path / "firewall.nft"
    ruleset.write_text(render_ruleset(topology, "worker-node-12", settings, Sources.of([CONTROL_PEER]), 22))
    checked = run("ip", "netns", "exec", node, "nft", "-c", "-f", str(ruleset), check=False)
    assert checked.returncode == 0, checked.stderr
    run("ip", "netns", "exec", node, "nft", "-f", str(ruleset))
    # Loading it again replaces the table in one transaction (what every later deploy does).
    run("ip", "netns", "exec", node, "nft", "-f", str(ruleset))

    listeners = [subprocess.Popen(["ip", "netns", "exec", node, sys.executable, "-c", LISTEN, str(port)])
                 for port in (NODE_PORT, REDIS.port, UNLISTED_PORT)]
    try:
        def connect(source: str, port: int, count: int = 1) -> list[str]:
            answer = run("ip", "netns", "exec", peer, sys.executable, "-c", CONNECT, source, NODE_ADDRESS,
                         str(port), str(count))
            return answer.stdout.split()

        # Wait for the listeners from the node's own loopback, which is always let in.
        run("ip", "netns", "exec", node, sys.executable, "-c",
            f"import socket, time\nfor _ in range(50):\n  try: socket.create_connection(('127.0.0.1', {REDIS.port}), 1); break\n"
            "  except OSError: time.sleep(0.1)")
        assert connect(CALLER, NODE_PORT) == ["ok"]
        assert connect(STRANGER, NODE_PORT) == ["timeout"]
        assert connect(CALLER, REDIS.port) == ["timeout"]  # Prometheus scrapes the metrics port, not RESP
        assert connect(CONTROL_PEER, REDIS.port) == ["ok"]
        assert connect(CONTROL_PEER, UNLISTED_PORT) == ["timeout"]  # no service of the topology
        assert connect(CALLER, NODE_PORT, count=5) == ["ok"] * 3 + ["refused"] * 2

        textfile = tmp_path / "textfile"
        textfile.mkdir()
        script = tmp_path / "metrics.sh"
        script.write_text(render_metrics_script(counter_labels(service_ports(topology, "worker-node-12", settings), 22),
                                                str(textfile)))
        run("ip", "netns", "exec", node, "sh", str(script))
        metrics = (textfile / "homelab_firewall.prom").read_text()
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()

    def value(**labels: str) -> float:
        wanted = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
        [line] = [line for line in metrics.splitlines() if line.startswith(f"{METRIC}{{{wanted}}}")]
        return float(line.rsplit(" ", 1)[1])

    assert f"# TYPE {METRIC} counter" in metrics
    node_port = {"service": "node_exporter", "listener": "metrics", "port": str(NODE_PORT)}
    # A dropped SYN is sent again by the client until it gives up: at least one packet each.
    assert value(**node_port, reason="not_allowed") >= 2
    assert value(service="toy_redis", listener="resp", port=str(REDIS.port), reason="not_allowed") >= 1
    assert value(**node_port, reason="flood") == 2
    assert value(service="ssh", listener="ssh", port="22", reason="not_allowed") == 0


@needs_netns
def test_nft_refuses_a_broken_ruleset_and_the_loaded_one_stays(netns, tmp_path):
    node, _peer = netns
    good = render_ruleset(namespaced_topology(), "worker-node-12", Settings(), Sources.of([CONTROL_PEER]), 22)
    (tmp_path / "good.nft").write_text(good)
    run("ip", "netns", "exec", node, "nft", "-f", str(tmp_path / "good.nft"))
    before = run("ip", "netns", "exec", node, "nft", "list", "table", "inet", "homelab").stdout
    broken = good.replace("policy drop;", "policy drop;\n\t\ttcp dport 22 ip saddr { 10.99.0.300 } accept")
    (tmp_path / "broken.nft").write_text(broken)
    checked = run("ip", "netns", "exec", node, "nft", "-c", "-f", str(tmp_path / "broken.nft"), check=False)
    assert checked.returncode != 0 and "10.99.0.300" in checked.stderr
    loaded = run("ip", "netns", "exec", node, "nft", "-f", str(tmp_path / "broken.nft"), check=False)
    assert loaded.returncode != 0
    assert run("ip", "netns", "exec", node, "nft", "list", "table", "inet", "homelab").stdout == before


@needs_netns
def test_without_its_table_the_metrics_script_leaves_no_stale_counters(netns, tmp_path):
    node, _peer = netns
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    stale = textfile / "homelab_firewall.prom"
    stale.write_text(f"{METRIC}{{reason=\"invalid\"}} 7\n")
    script = tmp_path / "metrics.sh"
    script.write_text(render_metrics_script(counter_labels(service_ports(namespaced_topology(), "worker-node-12",
                                                                        Settings()), 22), str(textfile)))
    result = run("ip", "netns", "exec", node, "sh", str(script), check=False)
    assert result.returncode == 1 and result.stderr.startswith("nft: ")
    assert list(textfile.iterdir()) == []  # neither the stale file nor a temporary one
