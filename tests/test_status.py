"""`homelab status` against real Prometheus and Alertmanager processes on loopback.

A one-host cluster (Prometheus, Alertmanager and toy-redis's metrics on one node) whose every
target can be up: Prometheus and Alertmanager scrape as themselves; node_exporter's and toy-redis's
ports are served by prometheus-client exporters, since status reads only whether scrapes work
(and toy-redis's command counters, for its error budget).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import start_http_server

from homelab.alerts.render import SLOS_FILE, THRESHOLDS_FILE, generated_files, load_slos, load_thresholds
from homelab.cli import main
from homelab.topology import Topology
from tests.alert_relay.conftest import ALERTMANAGER, wait_for
from tests.local_monitoring import PROMETHEUS, alertmanager, loopback_inventory, prometheus

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (Path(ALERTMANAGER).exists() and Path(PROMETHEUS).exists()),
    reason="needs Debian's prometheus and prometheus-alertmanager packages")]

NODE = "worker-node-14"


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
    servers = [exporter(topology.endpoint("node_exporter", NODE, "metrics").port, CollectorRegistry()),
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


def test_status_table_and_unreachable_prometheus(tmp_path, capsys):
    inventory = loopback_inventory(tmp_path, {"prometheus": [NODE], "alertmanager": [NODE]})
    started = time.monotonic()
    assert main(["status", "--inventory", str(inventory)]) == 1
    assert time.monotonic() - started < 5
    url = Topology.load(inventory).endpoint("prometheus").url()
    assert capsys.readouterr().err == f"homelab: cannot reach Prometheus at {url} (ConnectionError)\n"


def test_status_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "example:\n  homelab status --json" in capsys.readouterr().out
