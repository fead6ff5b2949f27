"""`homelab status` against real Prometheus and Alertmanager processes on loopback.

A one-host cluster (Prometheus, Alertmanager and toy-redis's metrics on one node) whose every
target can be up: Prometheus and Alertmanager scrape as themselves; node_exporter's and toy-redis's
ports are served by prometheus-client exporters, since status reads only whether scrapes work
(and toy-redis's command counters, for its error budget).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import start_http_server

from homelab.alerts.catalog import CERTIFICATE_REFUSED_STATUSES
from homelab.alerts.render import SLOS_FILE, THRESHOLDS_FILE, generated_files, load_slos, load_thresholds
from homelab.cli import main
from homelab.topology import Topology
from roles.node_exporter import DEPLOY_METRIC
from tests.alert_relay.conftest import ALERTMANAGER, wait_for
from tests.local_monitoring import PROMETHEUS, alertmanager, loopback_inventory, prometheus

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(ALERTMANAGER).exists() and Path(PROMETHEUS).exists()),
    reason="needs Debian's prometheus and prometheus-alertmanager packages")]

NODE = "worker-node-14"
DEPLOYED_AT = 1_790_000_000


def exporter(port: int, registry: CollectorRegistry):
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server


@pytest.fixture
def cluster(tmp_path):
    inventory = loopback_inventory(tmp_path, {"prometheus": [NODE], "alertmanager": [NODE], "toy_redis": [NODE]})
    topology = Topology.load(inventory)
    redis_registry = CollectorRegistry()
    commands = Counter("toy_redis_commands", "Commands processed.", ["command"], registry=redis_registry).labels("get")
    # Commands keep coming (an idle server's error ratio is 0/0, which status shows as no events).
    busy = threading.Event()
    threading.Thread(target=lambda: [commands.inc(100) for _ in iter(lambda: busy.wait(0.05), True)], daemon=True).start()
    node_registry = CollectorRegistry()
    # The deploy stamp as node_exporter's textfile collector serves it (roles.node_exporter).
    Gauge(DEPLOY_METRIC, "Last deploy.", ["commit"], registry=node_registry).labels("0123456789ab").set(DEPLOYED_AT)
    servers = [exporter(topology.endpoint("node_exporter", NODE, "metrics").port, node_registry),
               exporter(topology.endpoint("toy_redis", NODE, "metrics").port, redis_registry)]
    rules = {name: content for name, content in generated_files(load_thresholds(THRESHOLDS_FILE), load_slos(SLOS_FILE)).items()
             if name == "slos.rules.yml"}
    try:
        with alertmanager(tmp_path / "alertmanager", topology) as am_url, \
                prometheus(tmp_path / "prometheus", topology, rules) as prom_url:
            yield inventory, topology, am_url, prom_url, servers
    finally:
        busy.set()
        for server in servers:
            server.shutdown()
            server.server_close()


def status(inventory: Path, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["status", "--json", "--inventory", str(inventory)])
    return code, json.loads(capsys.readouterr().out)


def test_status_tells_up_down_firing_and_silenced_apart(cluster, capsys):
    inventory, topology, am_url, prom_url, servers = cluster
    expected = {(job.name, target.instance) for job in topology.scrape_jobs() for target in job.targets}
    assert {job for job, _ in expected} == {"node", "toy-redis", "alertmanager", "prometheus"}

    def all_up():
        code, report = status(inventory, capsys)
        return (code, report) if code == 0 else None

    code, report = wait_for(all_up, 30, "every target up", interval=0.5)
    assert {(row["service"], row["instance"]) for row in report["rows"]} == expected
    assert all(row["node"] == NODE and row["state"] == "up" and not row["firing"] for row in report["rows"])
    assert report["healthy"] is True

    # The SLO's recording rules ran on real Prometheus: no server errors yet, the whole budget left.
    def budget():
        return status(inventory, capsys)[1]["error_budget_left"].get("ToyRedisAvailability")

    assert wait_for(budget, 30, "ToyRedisAvailability's budget to be recorded", interval=0.5) == 1.0
    report = status(inventory, capsys)[1]
    rows = {row["service"]: row for row in report["rows"]}
    assert rows["toy-redis"]["error_budget_left"] == 1.0 and rows["node"]["error_budget_left"] is None
    # Versions from each service's own build_info (the stand-in exporters serve none).
    prometheus_version = requests.get(f"{prom_url}/api/v1/status/buildinfo", timeout=5).json()["data"]["version"]
    assert rows["prometheus"]["version"] == prometheus_version
    assert rows["alertmanager"]["version"] not in ("", "-") and rows["node"]["version"] == "-"
    assert report["last_deploy"] == {NODE: {"time": datetime.fromtimestamp(DEPLOYED_AT, timezone.utc).isoformat(), "commit": "0123456789ab"}}
    assert report["last_backup"] is None

    redis = topology.endpoint("toy_redis", NODE, "metrics")
    alert = {"labels": {"alertname": "ToyRedisDown", "severity": "critical", "job": "toy-redis",
                        "instance": redis.instance}}
    assert requests.post(f"{am_url}/api/v2/alerts", json=[alert], timeout=5).ok
    code, report = status(inventory, capsys)
    assert code == 1 and report["healthy"] is False
    firing = {row["service"]: row["firing"] for row in report["rows"]}
    assert firing["toy-redis"] == ["ToyRedisDown(critical)"] and firing["node"] == []

    assert main(["maintenance", "start", NODE, "--for", "10m", "--reason", "status test",
                 "--inventory", str(inventory)]) == 0
    code, report = status(inventory, capsys)
    assert code == 0 and report["maintenance"][0]["nodes"] == [NODE]

    servers[1].shutdown()
    servers[1].server_close()

    def redis_down():
        report = status(inventory, capsys)[1]
        return [row for row in report["rows"] if row["service"] == "toy-redis" and row["state"] == "down"]

    wait_for(redis_down, 30, "toy-redis's scrape to fail", interval=0.5)
    assert status(inventory, capsys)[0] == 1


def test_hostile_labels_and_annotations_print_escaped(cluster, capsys):
    inventory, topology, am_url, _prom_url, _servers = cluster
    redis = topology.endpoint("toy_redis", NODE, "metrics")
    hostile = "Evil\x1b[2J\x1b]0;owned\x07\r\nworker-node-99  toy-redis  up\u202e\x9b31m"
    alerts = [{"labels": {"alertname": hostile, "severity": "critical\x1b[32m", "job": "toy-redis", "instance": redis.instance}},
              {"labels": {"alertname": hostile, "job": "nowhere\x1bc"}}]
    assert requests.post(f"{am_url}/api/v2/alerts", json=alerts, timeout=5).ok
    silence = {"matchers": [{"name": "instance", "value": "none", "isRegex": False}], "startsAt": "2026-01-01T00:00:00Z",
               "endsAt": "2099-01-01T00:00:00Z", "createdBy": "x", "comment": f"maintenance of {NODE}: {hostile}"}
    assert requests.post(f"{am_url}/api/v2/silences", json=silence, timeout=5).ok
    capsys.readouterr()
    assert main(["status", "--inventory", str(inventory)]) == 1
    out = capsys.readouterr().out
    assert not [char for char in out if char != "\n" and (ord(char) < 0x20 or 0x7f <= ord(char) < 0xa0 or char == "\u202e")]
    assert "Evil\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x0aworker-node-99  toy-redis  up\\u202e\\x9b31m(critical\\x1b[32m)" in out
    assert "job=nowhere\\x1bc" in out
    assert out.count("Evil") == 3  # its row, the other alert, the maintenance line: no line forged


def test_status_with_prometheus_and_alertmanager_down_says_so_at_once(tmp_path, capsys):
    inventory = loopback_inventory(tmp_path, {"prometheus": [NODE], "alertmanager": [NODE]})
    started = time.monotonic()
    assert main(["status", "--inventory", str(inventory)]) == 1
    assert time.monotonic() - started < 5
    topology = Topology.load(inventory)
    out = capsys.readouterr().out
    prometheus, manager = topology.endpoint("prometheus").url(), topology.endpoint("alertmanager").url()
    assert (f"unreachable: Prometheus: cannot reach Prometheus at {prometheus} (ConnectionError); services and deploys "
            "asked over SSH") in out
    assert f"unreachable: Alertmanager: cannot reach Alertmanager at {manager} (ConnectionError)" in out
    assert f"unreachable: {NODE}: no answer over SSH" in out  # nothing listens for SSH here either
    assert all(line.split()[2] == "unknown" for line in out.splitlines()[1:4])


def test_status_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "example:\n  homelab status --json" in capsys.readouterr().out


def test_with_tls_on_status_has_a_row_for_each_listeners_tls_check(tls_topology):
    """Blackbox's check of each secured listener (job tls-check) is a row of its node: where a
    listener refusing TLS or the login shows (its state comes from tls_check_states)."""
    from homelab.alerts.catalog import TLS_CHECK_JOB
    from homelab.status import expected_targets

    checks = {(check.endpoint.host, check.endpoint.instance) for check in tls_topology.tls_checks()}
    assert checks
    rows = {(node, instance) for node, job, instance, _unit in expected_targets(tls_topology) if job == TLS_CHECK_JOB}
    assert rows == checks
    plain = Topology.load(Path(__file__).resolve().parents[1] / "inventory" / "lab.py")
    assert not [job for _node, job, _instance, _unit in expected_targets(plain) if job == TLS_CHECK_JOB]


@pytest.mark.parametrize("status_code", CERTIFICATE_REFUSED_STATUSES)
def test_a_refused_client_certificate_is_named_not_shown_as_a_bare_status(status_code):
    """nginx's fronted ports refuse a certificate with a status of their own; status names the reason
    as ScrapeTLSOrLoginFailing does, rather than "HTTP 403"."""
    from homelab.alerts.catalog import CHECK_LOGIN, CHECK_PORT, TLS_CHECK_JOB, ScrapeTLSOrLoginFailing
    from homelab.status import tls_check_states

    def sample(name: str, check: str, value: float) -> dict:
        labels = {"__name__": name, "job": TLS_CHECK_JOB, "check": check, "instance": "node:port"}
        return {"metric": labels, "value": [0, str(value)]}

    samples = [sample("probe_success", CHECK_LOGIN, 0), sample("probe_http_status_code", CHECK_LOGIN, status_code),
               sample("probe_success", CHECK_PORT, 1)]
    assert tls_check_states(samples) == {"node:port": ScrapeTLSOrLoginFailing.REASONS["certificate"]}
