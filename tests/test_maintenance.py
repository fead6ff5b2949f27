"""`homelab maintenance` against a real Alertmanager (Debian's package) on loopback.

The inventory is the lab's with every host at 127.0.0.1 and every service on a free port, so the
node names, the services each runs and their ports all come from the same topology a deploy uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from homelab.cli import REPO, main
from homelab.maintenance import alertmanager as alertmanager_client
from homelab.topology import Topology
from tests.alert_relay.conftest import ALERTMANAGER
from tests.local_monitoring import alertmanager, loopback_inventory

pytestmark = pytest.mark.skipif(not Path(ALERTMANAGER).exists(),
                                reason="needs Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)")


@pytest.fixture
def cluster(tmp_path):
    """(inventory path, Alertmanager URL, topology) with a real Alertmanager running."""
    inventory = loopback_inventory(tmp_path)
    topology = Topology.load(inventory)
    with alertmanager(tmp_path / "alertmanager", topology) as url:
        yield inventory, url, topology


def homelab(inventory: Path, *args: str) -> int:
    command, rest = args[0], args[1:]
    return main(["maintenance", command, "--inventory", str(inventory), *rest])


def states(url: str) -> dict[str, str]:
    """alert name -> its state (active, suppressed) as Alertmanager reports it now."""
    return {alert["labels"]["alertname"]: alert["status"]["state"]
            for alert in requests.get(f"{url}/api/v2/alerts", timeout=5).json()}


def post_alerts(url: str, topology: Topology) -> None:
    """Alerts as Prometheus sends them: about worker-node-12's scrapes, probes and its sole service,
    and about another node."""
    redis = topology.endpoint("toy_redis", "worker-node-12", "metrics")
    node = topology.endpoint("node_exporter", "worker-node-12", "metrics")
    other = topology.endpoint("node_exporter", "worker-node-11", "metrics")
    alerts = [
        {"alertname": "ToyRedisDown", "job": "toy-redis", "instance": redis.instance},
        {"alertname": "HostMemoryHigh", "job": "node", "instance": node.instance},
        {"alertname": "ProbeFailed", "job": "blackbox", "instance": f"http://{redis.instance}/healthz"},
        {"alertname": "ToyRedisAbsent", "job": "toy-redis"},
        {"alertname": "OtherNodeMemoryHigh", "job": "node", "instance": other.instance},
    ]
    response = requests.post(f"{url}/api/v2/alerts", json=[{"labels": {**labels, "severity": "critical"}}
                                                          for labels in alerts], timeout=5)
    assert response.ok, response.text


def test_a_window_mutes_the_nodes_alerts_until_it_ends(cluster, capsys):
    inventory, url, topology = cluster
    post_alerts(url, topology)
    assert set(states(url).values()) == {"active"}

    assert homelab(inventory, "start", "worker-node-12", "--for", "30m", "--reason", "kernel upgrade") == 0
    muted = {"ToyRedisDown": "suppressed", "HostMemoryHigh": "suppressed", "ProbeFailed": "suppressed",
             "ToyRedisAbsent": "suppressed", "OtherNodeMemoryHigh": "active"}
    assert states(url) == muted

    silences = [s for s in requests.get(f"{url}/api/v2/silences", timeout=5).json() if s["status"]["state"] == "active"]
    assert silences and all(s["comment"] == "maintenance of worker-node-12: kernel upgrade" for s in silences)
    for silence in silences:
        lasts = _seconds_between(silence["startsAt"], silence["endsAt"])
        assert 30 * 60 - 5 <= lasts <= 30 * 60

    capsys.readouterr()
    assert homelab(inventory, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("worker-node-12 ") and lines[1].endswith("kernel upgrade")
    assert " active " in lines[1] and (" 0h29m " in lines[1] or " 0h30m " in lines[1])

    assert homelab(inventory, "end", "worker-node-12") == 0
    assert set(states(url).values()) == {"active"}
    assert all(s["status"]["state"] == "expired" for s in requests.get(f"{url}/api/v2/silences", timeout=5).json())
    capsys.readouterr()
    assert homelab(inventory, "list") == 0
    assert capsys.readouterr().out == "no maintenance windows\n"


def test_starting_again_replaces_the_window_and_ending_leaves_other_nodes_alone(cluster, capsys):
    inventory, url, topology = cluster
    post_alerts(url, topology)
    assert homelab(inventory, "start", "worker-node-12", "--for", "1h", "--reason", "disk swap") == 0
    assert homelab(inventory, "start", "worker-node-11", "--for", "2h", "--reason", "bios update") == 0
    assert homelab(inventory, "start", "worker-node-12", "--for", "10m", "--reason", "disk swap, shorter") == 0
    capsys.readouterr()
    homelab(inventory, "list")
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["worker-node-12", "worker-node-11"]  # soonest end first
    assert rows[0].endswith("disk swap, shorter")

    assert homelab(inventory, "end", "worker-node-12") == 0
    assert states(url)["OtherNodeMemoryHigh"] == "suppressed"
    assert states(url)["ToyRedisDown"] == "active"


def test_a_service_alert_without_instance_is_muted_only_when_all_its_nodes_are_in_the_window(cluster):
    inventory, url, topology = cluster
    post_alerts(url, topology)
    others = [host for host in topology.hosts if host not in topology.hosts_of("toy_redis")]
    assert homelab(inventory, "start", *others, "--for", "5m", "--reason", "everything but toy-redis") == 0
    assert states(url)["ToyRedisAbsent"] == "active"


@pytest.mark.parametrize(("args", "message"), [
    (["start", "worker-node-99", "--for", "30m", "--reason", "x"], "unknown node 'worker-node-99': expected one of "),
    (["start", "worker-node-12", "--for", "soon", "--reason", "x"], "--for: expected a duration like 30m, 2h or 1d, got 'soon'"),
    (["start", "worker-node-12", "--for", "8d", "--reason", "x"], "--for: expected more than 0s and at most 7d, got '8d'"),
    (["start", "worker-node-12", "--for", "30m", "--reason", "  "], "--reason: expected a short text saying why"),
    (["end", "worker-node-99"], "unknown node 'worker-node-99'"),
])
def test_a_bad_argument_is_one_line_and_changes_nothing(cluster, capsys, args, message):
    inventory, url, _topology = cluster
    assert homelab(inventory, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"homelab: {message}") and err.count("\n") == 1
    assert requests.get(f"{url}/api/v2/silences", timeout=5).json() == []


def test_an_unreachable_alertmanager_is_one_line(tmp_path, capsys):
    inventory = loopback_inventory(tmp_path)  # nothing listens on its ports
    started = time.monotonic()
    assert homelab(inventory, "list") == 1
    assert time.monotonic() - started < 5
    url = Topology.load(inventory).endpoint("alertmanager").url()
    assert capsys.readouterr().err == f"homelab: cannot reach Alertmanager at {url} (ConnectionError)\n"


def test_every_maintenance_command_has_help_with_an_example(capsys):
    for command in ("start", "list", "end"):
        with pytest.raises(SystemExit) as exit_info:
            main(["maintenance", command, "--help"])
        assert exit_info.value.code == 0
        assert f"example:\n  homelab maintenance {command}" in capsys.readouterr().out


def test_a_restart_silence_mutes_that_service_on_that_node_only(cluster):
    from datetime import datetime, timedelta, timezone

    from homelab.maintenance import restart_matchers

    _inventory, url, topology = cluster
    post_alerts(url, topology)
    manager = alertmanager_client(topology)
    manager.create(restart_matchers(topology, "worker-node-12", "toy_redis"),
                   datetime.now(timezone.utc) + timedelta(minutes=5), "test", "restart of toy-redis")
    # Its scrape and its health probe (if it had one) are muted; the node's other alerts are not.
    assert states(url) == {"ToyRedisDown": "suppressed", "HostMemoryHigh": "active", "ProbeFailed": "active",
                           "ToyRedisAbsent": "active", "OtherNodeMemoryHigh": "active"}


def test_restart_matchers_cover_every_scrape_and_probe_of_the_service_on_the_node():
    import re

    from homelab.maintenance import restart_matchers

    topology = Topology.load(REPO / "inventory" / "lab.py")
    [relay] = restart_matchers(topology, "worker-node-14", "alert_relay")
    pattern = re.compile(relay["value"])
    endpoint = topology.endpoint("alert_relay", "worker-node-14")
    assert pattern.fullmatch(endpoint.instance) and pattern.fullmatch(f"http://{endpoint.instance}/healthz")
    assert not pattern.fullmatch(topology.endpoint("alertmanager", "worker-node-14").instance)
    assert not pattern.fullmatch(topology.endpoint("node_exporter", "worker-node-14", "metrics").instance)
    # Only mtail's port when mtail restarts, not nginx's own.
    [mtail] = restart_matchers(topology, "master-node", "nginx", ("mtail",))
    assert mtail["value"] == re.escape(topology.endpoint("nginx", "master-node", "mtail").instance)
    assert restart_matchers(topology, "master-node", "grafana") == ()  # no port, nothing alerts on it


def test_list_shows_hostile_silence_text_escaped(cluster, capsys):
    inventory, url, topology = cluster
    from homelab.maintenance import instance_pattern

    hostile = "ok\x1b[2J\x1b]0;pwned\x07\nworker-node-99  active  fake row\u202e"
    body = {"matchers": [{"name": "instance", "value": instance_pattern("worker-node-12"), "isRegex": True}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "eve\x1b[31m", "comment": f"maintenance of worker-node-12: {hostile}"}
    assert requests.post(f"{url}/api/v2/silences", json=body, timeout=5).ok
    capsys.readouterr()
    assert homelab(inventory, "list") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and out.count("\n") == 2
    assert "ok\\x1b[2J\\x1b]0;pwned\\x07\\x0aworker-node-99  active  fake row\\u202e" in out
    assert "eve\\x1b[31m" in out


def _seconds_between(start: str, end: str) -> float:
    from homelab.maintenance import parse_time

    return (parse_time(end) - parse_time(start)).total_seconds()
