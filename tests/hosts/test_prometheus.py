"""Prometheus on its lab host: running as deployed, scraping every target the inventory implies, quiet."""

from __future__ import annotations

import time

import pytest

from roles.prometheus import RULES_DIR, Settings, render_config, rule_files
from tests.conftest import REPO, dry_run_error, hosts_in, run_pyinfra
from tests.roles.test_prometheus import LAB_TOPOLOGY, scrape_jobs

pytestmark = pytest.mark.lab


# Lab targets are scraped every scrape_interval; a freshly deployed stack needs a few rounds.
TARGETS_UP_WITHIN_S = 120


@pytest.fixture(params=hosts_in("prometheus"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


def api(node, path: str) -> dict:
    """GET the node's Prometheus HTTP API from the control machine; the `data` of its answer."""
    response = LAB_TOPOLOGY.access("prometheus", node.backend.host.name).get(f"/api/v1/{path}")
    response.raise_for_status()
    answer = response.json()
    assert answer["status"] == "success", answer
    return answer["data"]


def expected_targets() -> set[tuple[str, str]]:
    """(job, instance) for every target the lab inventory implies."""
    jobs = scrape_jobs(render_config(Settings(), LAB_TOPOLOGY))
    return {(job, instance) for job, targets in jobs.items() for instance in targets}


def test_prometheus_runs_with_the_deployed_rules(node):
    service = node.service("prometheus")
    assert service.is_running and service.is_enabled
    port = LAB_TOPOLOGY.port(node.backend.host.name, "prometheus")
    assert node.socket(f"tcp://0.0.0.0:{port}").is_listening or node.socket(f"tcp://:::{port}").is_listening
    deployed = set(node.check_output(f"ls {RULES_DIR}").split())
    assert deployed == set(rule_files())
    loaded = {group["file"].rsplit("/", 1)[-1] for group in api(node, "rules")["groups"]}
    assert loaded == set(rule_files())


def wait_for_targets(node) -> tuple[dict, dict]:
    """Poll until every expected target is up (bounded); (health by target, the ones not up)."""
    expected = expected_targets()
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while True:
        active = api(node, "targets?state=active")["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): (t["health"], t["lastError"]) for t in active}
        not_up = {target: health.get(target, ("missing", "")) for target in expected
                  if health.get(target, ("missing",))[0] != "up"}
        if not not_up or time.monotonic() > deadline:
            return health, not_up
        time.sleep(5)


def test_every_expected_target_is_up(node):
    health, not_up = wait_for_targets(node)
    assert not not_up, f"targets not up after {TARGETS_UP_WITHIN_S}s: {not_up}"
    # Nothing beyond what the inventory implies, and worker-node-12's toy-redis among them.
    assert set(health) == expected_targets()
    assert ("toy-redis", LAB_TOPOLOGY.endpoint("toy_redis", "worker-node-12", "metrics").instance) in health


def test_bad_prometheus_settings_stop_the_deploy_before_any_change(lab):
    [host] = hosts_in("prometheus")[:1]
    error = dry_run_error(host, "prometheus.scrape_interval", "only_roles=prometheus",
                          'prometheus={"scrape_interval": "often"}')
    assert error.endswith(f"inventory data for {host}: prometheus.scrape_interval: expected a duration like "
                          "30s, 5m, 1h30m or 15d (units largest first, each once) (got 'often')")


def test_a_rule_file_no_longer_generated_is_removed_on_the_next_deploy(node):
    stale = f"{RULES_DIR}/retired.rules.yml"
    node.run_expect([0], f"cp {RULES_DIR}/{sorted(rule_files())[0]} {stale}")
    run = run_pyinfra("deploys/all.py", "--limit", node.backend.host.name, "--data", "only_roles=prometheus")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not node.file(stale).exists
    # The reload (SIGHUP) is applied asynchronously: give it a few seconds.
    deadline = time.monotonic() + 10
    while (loaded := {g["file"].rsplit("/", 1)[-1] for g in api(node, "rules")["groups"]}) != set(rule_files()):
        assert time.monotonic() < deadline, f"Prometheus still loads {loaded}"
        time.sleep(0.5)


def test_bad_threshold_file_stops_the_deploy_before_any_change(lab, tmp_path):
    [host] = hosts_in("prometheus")[:1]
    bad = tmp_path / "thresholds.yaml"
    bad.write_text((REPO / "alerts/thresholds.yaml").read_text()
                   .replace("warning_percent: 60 ", "warning_percent: 95 ", 1))
    error = dry_run_error(host, "HostMemoryHigh", f"thresholds_file={bad}")
    assert error.endswith(f"{bad}: alerts.HostMemoryHigh.warning_percent: expected below critical_percent (90), got 95")
