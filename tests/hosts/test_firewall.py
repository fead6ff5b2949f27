"""The node firewall on the lab, from outside and inside: unlisted nodes and the control machine
are dropped on every service port they do not call, listed callers get through, floods are cut
off, drops are exported, and no ruleset - broken or shutting SSH out - costs the control machine
its way in."""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket
import time

import pytest

from homelab.config import settings_from_data
from homelab.topology import CONTROL
from roles.firewall import (APPLY_SCRIPT, LISTING_INTACT, LOADED_STATE, METRIC, METRICS_FILE_NAME, RULESET_FILE, Settings,
                            Sources, fingerprint_of, render_ruleset)
from tests.conftest import ALL_HOSTS, lab_address, run_pyinfra
from tests.hosts.test_prometheus import api, wait_for_targets
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

# A dropped SYN gives a timeout; this is long enough for a loaded 2-core machine to answer one
# that is let in, yet keeps a test sending dozens of attempts quick.
CONNECT_TIMEOUT_S = 2.0
PROMETHEUS_HOST = LAB_TOPOLOGY.hosts_of("prometheus")[0]

# Run on a node: connect to each (address, port) at once (threads); print the outcomes in order.
PROBE = """
import json, socket, sys, threading
targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
outcomes = [None] * len(targets)
def probe(index, address, port):
    try:
        socket.create_connection((address, port), timeout).close()
        outcomes[index] = "ok"
    except ConnectionRefusedError:
        outcomes[index] = "refused"
    except OSError:
        outcomes[index] = "timeout"
threads = [threading.Thread(target=probe, args=(index, *target)) for index, target in enumerate(targets)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(outcomes))
"""

# Run on a node: open `count` connections, `per_second` at most, hold them all; print the outcomes.
HOLD = """
import json, socket, sys, time
address, port, count, per_second, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
held, outcomes = [], []
for _ in range(count):
    started = time.monotonic()
    try:
        held.append(socket.create_connection((address, port), timeout)); outcomes.append("ok")
    except ConnectionRefusedError:
        outcomes.append("refused")
    except OSError:
        outcomes.append("timeout")
    time.sleep(max(0.0, 1 / per_second - (time.monotonic() - started)))
print(json.dumps(outcomes))
"""


def settings_of(host: str) -> Settings:
    return settings_from_data(host, "firewall", Settings, LAB_TOPOLOGY.data(host, "firewall"))


def from_node(node, script: str, *args) -> object:
    command = " ".join(shlex.quote(str(part)) for part in ("python3", "-c", script, *args))
    return json.loads(node.check_output(command))


def probe_from(node, *targets: tuple[str, int]) -> list[str]:
    return from_node(node, PROBE, json.dumps(targets), CONNECT_TIMEOUT_S)


def probe_from_here(address: str, port: int) -> str:
    try:
        socket.create_connection((address, port), CONNECT_TIMEOUT_S).close()
        return "ok"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"


def ssh_answers_anew(host: str) -> bool:
    """A new connection from this (the control) machine gets an SSH banner."""
    try:
        with socket.create_connection((lab_address(host), 22), CONNECT_TIMEOUT_S) as connection:
            connection.settimeout(CONNECT_TIMEOUT_S)
            return connection.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def loaded_state(node) -> tuple[str, str]:
    """The loaded table's fingerprint, and whether it lists as it did when confirmed."""
    fingerprint, listing = node.check_output(LOADED_STATE).splitlines()
    return fingerprint, listing


def loaded_fingerprint(node) -> str:
    return loaded_state(node)[0]


@pytest.fixture(scope="module")
def nodes(deployed, testinfra_hosts):
    return testinfra_hosts


def test_every_node_runs_the_ruleset_rendered_from_the_topology(lab, nodes):
    for host in ALL_HOSTS:
        wanted = render_ruleset(LAB_TOPOLOGY, host, settings_of(host), Sources.of([str(lab.gateway)]), 22)
        node = nodes[host]
        assert loaded_state(node) == (fingerprint_of(wanted), LISTING_INTACT), host
        assert node.file(RULESET_FILE).content_string == wanted
        assert node.service("homelab-firewall").is_enabled
        assert node.service("homelab-firewall-metrics.timer").is_running
        # Nothing else in the node's tables: the project owns exactly one.
        assert node.check_output("nft list tables") == "table inet homelab"


def test_unlisted_nodes_and_the_control_machine_are_dropped_on_every_port_they_do_not_call(lab, nodes):
    checked = 0
    for host in ALL_HOSTS:
        for inbound in LAB_TOPOLOGY.inbound(host):
            target = (lab_address(host), inbound.port)
            # A port open to outside networks (nginx to `users`: anyone) has no strangers within them.
            outside = [network for party in inbound.parties if party != CONTROL
                       for network in getattr(settings_of(host).outside_callers, party)]
            strangers = [other for other in sorted(set(ALL_HOSTS) - set(inbound.callers) - {host})
                         if not any(ipaddress.ip_address(lab_address(other)) in network for network in outside)]
            for stranger in strangers:
                assert probe_from(nodes[stranger], target) == ["timeout"], (stranger, host, inbound)
                checked += 1
            if CONTROL not in inbound.parties and not any(lab.gateway in network for network in outside):
                assert probe_from_here(*target) == "timeout", ("control", host, inbound)
                checked += 1
    assert checked >= 20


def test_listed_callers_get_through(lab, nodes):
    checked = 0
    for host in ALL_HOSTS:
        serving = [inbound for inbound in LAB_TOPOLOGY.inbound(host) if host in LAB_TOPOLOGY.serving(inbound.role)]
        for inbound in serving:
            target = (lab_address(host), inbound.port)
            for caller in inbound.callers:
                assert probe_from(nodes[caller], target) == ["ok"], (caller, host, inbound)
                checked += 1
            if CONTROL in inbound.parties:
                assert probe_from_here(*target) == "ok", ("control", host, inbound)
                checked += 1
    assert checked >= 10


def test_every_prometheus_target_stays_up(nodes):
    _, not_up = wait_for_targets(nodes[PROMETHEUS_HOST])
    assert not not_up, f"targets not up behind the firewall: {not_up}"


def test_a_flooding_caller_is_cut_off_at_its_per_source_limit(nodes):
    """Prometheus's node opening more connections to a node_exporter than the limit allows: those
    beyond it are refused at once (a reset), and counted as flood."""
    target_host = next(host for host in ALL_HOSTS if host != PROMETHEUS_HOST)
    port = LAB_TOPOLOGY.port(target_host, "node_exporter", "metrics")
    limit = settings_of(target_host).connections_per_source
    pace = settings_of(target_host).new_connections_per_second * 0.8  # below the rate limit: count alone
    before = drop_counters(nodes[target_host])
    outcomes = from_node(nodes[PROMETHEUS_HOST], HOLD, lab_address(target_host), port, limit + 5, pace,
                         CONNECT_TIMEOUT_S)
    assert outcomes.count("ok") >= limit - 2  # Prometheus's own scrape connection counts too
    assert outcomes[-5:] == ["refused"] * 5
    flood = ("node_exporter", "metrics", str(port), "flood")
    assert nodes[target_host].run(f"systemctl start homelab-firewall-metrics.service").rc == 0
    assert drop_counters(nodes[target_host])[flood] - before.get(flood, 0) >= 5


def test_a_burst_of_new_connections_from_a_caller_is_limited(nodes):
    target_host = next(host for host in ALL_HOSTS if host != PROMETHEUS_HOST)
    port = LAB_TOPOLOGY.port(target_host, "node_exporter", "metrics")
    settings = settings_of(target_host)
    attempts = settings.new_connections_burst + 4 * settings.new_connections_per_second
    outcomes = probe_from(nodes[PROMETHEUS_HOST], *[(lab_address(target_host), port)] * attempts)
    # The burst gets in, then about the rate per second (a dropped SYN is sent again after 1 s).
    assert outcomes.count("ok") >= settings.new_connections_burst, outcomes
    assert outcomes.count("timeout") >= settings.new_connections_per_second, outcomes


def drop_counters(node) -> dict[tuple[str, str, str, str], float]:
    """(service, listener, port, reason) -> packets, from the file node_exporter exports."""
    text = node.file(f"/var/lib/prometheus/node-exporter/{METRICS_FILE_NAME}").content_string
    counters = {}
    for line in text.splitlines():
        if line.startswith(METRIC + "{"):
            labels = dict(part.split("=", 1) for part in line[len(METRIC) + 1:].split("}", 1)[0].split(","))
            labels = {key: value.strip('"') for key, value in labels.items()}
            counters[(labels["service"], labels["listener"], labels["port"], labels["reason"])] = float(line.rsplit(" ", 1)[1])
    return counters


def test_drops_reach_prometheus(nodes):
    """The counters of the strangers' attempts above, in Prometheus, for every node."""
    prometheus = nodes[PROMETHEUS_HOST]
    deadline = time.monotonic() + 90
    while True:
        result = api(prometheus, f"query?query=sum+by+(instance)+({METRIC}%7Breason%3D%22not_allowed%22%7D)")["result"]
        instances = {sample["metric"]["instance"].split(":")[0] for sample in result if float(sample["value"][1]) > 0}
        if instances == set(ALL_HOSTS) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert instances == set(ALL_HOSTS)


def test_a_broken_ruleset_is_refused_and_nothing_changes(nodes):
    node = nodes["worker-node-11"]
    before = loaded_fingerprint(node)
    staged = f"{RULESET_FILE}.staged"
    node.check_output(f"sed 's/policy drop;/policy drop; tcp dport 22 ip saddr {{ 10.77.0.300 }} accept/' "
                      f"{RULESET_FILE} > {staged}")
    applied = node.run(f"{APPLY_SCRIPT} apply {staged} 30")
    assert applied.rc == 1
    assert "nft refused the ruleset, nothing changed" in applied.stderr and "10.77.0.300" in applied.stderr
    assert loaded_fingerprint(node) == before
    assert node.run("systemctl is-active homelab-firewall-rollback.timer").stdout.strip() != "active"
    assert ssh_answers_anew("worker-node-11")


def test_a_ruleset_shutting_ssh_out_is_rolled_back_by_the_node(nodes):
    """A deploy whose ruleset would let SSH in only from elsewhere: the deploy stops with one line,
    and the node restores the previous ruleset by itself once the confirmation does not come."""
    host, node = "worker-node-11", nodes["worker-node-11"]
    before = loaded_fingerprint(node)
    rollback_s = 15
    locked_out = json.dumps({"control_addresses": ["192.0.2.1/32"], "rollback_after": f"{rollback_s}s"})
    run = run_pyinfra("deploys/all.py", "--limit", host, "--data", "only_roles=firewall", "--data", f"firewall={locked_out}")
    assert run.returncode != 0
    assert "the new ruleset shuts this machine out" in run.stderr
    assert "Traceback" not in run.stderr
    deadline = time.monotonic() + rollback_s + 30
    while not ssh_answers_anew(host):
        assert time.monotonic() < deadline, "SSH did not come back after the rollback"
        time.sleep(1)
    assert loaded_fingerprint(node) == before
    assert fingerprint_of(node.file(RULESET_FILE).content_string) == before


def test_a_second_firewall_deploy_changes_nothing(nodes):
    rerun = run_pyinfra("deploys/all.py", "--data", "only_roles=firewall")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert rerun.changed() == [], f"a second run changed: {rerun.changed()}"
