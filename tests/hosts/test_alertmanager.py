"""Alertmanager on its lab host: the deployed routing, a private token file, and alerts arriving."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from roles.alertmanager import CONFIG_FILE, Settings, render_config
from tests.conftest import REPO, dry_run_error, hosts_in
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

TOKEN_FILE = Settings().webhook_token_file


@pytest.fixture(params=hosts_in("alertmanager"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


def api(node, path: str, **params) -> dict | list:
    """GET the node's Alertmanager API v2 from the control machine."""
    response = LAB_TOPOLOGY.access("alertmanager", node.backend.host.name).get(f"/api/v2/{path}", params=params)
    response.raise_for_status()
    return response.json()


def alerts(node, alertname: str) -> list[dict]:
    return api(node, "alerts", filter=f"alertname={alertname}")


def test_alertmanager_runs_the_routing_from_routes_yaml(node):
    service = node.service("prometheus-alertmanager")
    assert service.is_running and service.is_enabled
    status = api(node, "status")
    loaded = yaml.safe_load(status["config"]["original"])
    wanted = yaml.safe_load(render_config(Settings(), LAB_TOPOLOGY))
    # What Alertmanager loaded (it reports the parsed config, defaults filled in) is our route tree.
    for key in ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval"):
        assert loaded["route"][key] == wanted["route"][key], key
    assert [(r["matchers"], r["receiver"]) for r in loaded["route"]["routes"]] == [
        (r["matchers"], r["receiver"]) for r in wanted["route"]["routes"]]
    assert node.file(CONFIG_FILE).content_string == render_config(Settings(), LAB_TOPOLOGY)
    # Single node: no cluster gossip port.
    assert not node.socket("tcp://0.0.0.0:9094").is_listening


def test_webhook_token_is_a_private_file_outside_the_config(node):
    token = node.file(TOKEN_FILE)
    assert token.exists and token.user == "root" and token.group == "prometheus" and token.mode == 0o640
    assert token.size > 0
    assert TOKEN_FILE in node.file(CONFIG_FILE).content_string
    # The config names the file; the token itself appears in neither the config nor the flags.
    secret = node.check_output(f"cat {TOKEN_FILE}").strip()
    assert secret not in node.file(CONFIG_FILE).content_string
    assert secret not in node.file("/etc/default/prometheus-alertmanager").content_string


def test_stopping_toy_redis_makes_its_down_alert_reach_alertmanager(node, testinfra_hosts):
    rule = yaml.safe_load((REPO / "alerts" / "generated" / "toy-redis.rules.yml").read_text())
    [down] = [r for group in rule["groups"] for r in group["rules"] if r.get("alert") == "ToyRedisDown"]
    for_s = int(down["for"].rstrip("m")) * 60 if down["for"].endswith("m") else int(down["for"].rstrip("s"))
    [redis_host] = hosts_in("toy_redis")
    redis = testinfra_hosts[redis_host]
    assert not alerts(node, "ToyRedisDown"), "ToyRedisDown already active before toy-redis was stopped"
    redis.run_expect([0], "systemctl stop toy-redis")
    try:
        # Scrape and evaluation intervals, then `for:`, then Prometheus's send to Alertmanager.
        deadline = time.monotonic() + for_s + 120
        while not (arrived := alerts(node, "ToyRedisDown")):
            assert time.monotonic() < deadline, f"ToyRedisDown did not reach Alertmanager within {for_s + 120}s"
            time.sleep(5)
        assert arrived[0]["labels"]["instance"] == LAB_TOPOLOGY.endpoint("toy_redis", redis_host, "metrics").instance
        assert arrived[0]["labels"]["severity"] == "critical"
        assert arrived[0]["status"]["state"] == "active"
    finally:
        redis.run_expect([0], "systemctl start toy-redis")


def test_a_broken_routes_file_stops_the_deploy_before_any_change(lab, tmp_path):
    broken = tmp_path / "routes.yaml"
    broken.write_text((REPO / "alerts" / "routes.yaml").read_text().replace("group_wait: 30s", "group_wait: soon"))
    [host] = hosts_in("alertmanager")[:1]
    error = dry_run_error(host, "alertmanager.group_wait", "only_roles=alertmanager",
                          "alertmanager=" + json.dumps({"routes_file": str(broken)}))
    assert error.endswith(f"{broken}: alertmanager.group_wait: expected a duration like 30s, 5m, 1h30m or 15d "
                          "(units largest first, each once) (got 'soon')")
