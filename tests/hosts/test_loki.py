"""Loki on its lab host: ready, retention as configured, and a pushed line can be queried back."""

from __future__ import annotations

import json
import time

import pytest

from roles.loki.package import PACKAGE
from tests.conftest import hosts_in
from tests.roles.test_prometheus import LAB_TOPOLOGY
from tests.hosts.test_grafana import checker_runs, deployed_node, installed_as_its_facts_say

pytestmark = pytest.mark.lab


@pytest.fixture(params=hosts_in("loki"))
def node(request):
    return deployed_node(request, "loki")


def loki(node):
    """The node's Loki as the control machine reaches it (homelab.access)."""
    return LAB_TOPOLOGY.access("loki", node.backend.host.name)


def wait_ready(node, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loki(node).get("/ready").text.strip() == "ready":
            return
        time.sleep(1)
    raise AssertionError(f"Loki on {node.backend.host} not ready after {timeout}s")


def test_loki_is_ready_with_retention_from_group_data(node):
    assert node.service("loki").is_running and node.service("loki").is_enabled
    wait_ready(node)
    config = loki(node).get("/config").text
    assert "retention_period: 31d" in config
    assert "retention_enabled: true" in config


def test_a_pushed_line_can_be_queried_back(node):
    wait_ready(node)
    marker = f"lab-check-{time.time_ns()}"
    stream = {"streams": [{"stream": {"job": "lab-check"}, "values": [[str(time.time_ns()), marker]]}]}
    loki(node).request("POST", "/loki/api/v1/push", json=stream).raise_for_status()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = loki(node).get("/loki/api/v1/query_range", params={"query": '{job="lab-check"}', "since": "5m"}).json()
        if marker in json.dumps(answer["data"]["result"]):
            return
        time.sleep(1)
    raise AssertionError("the pushed line did not come back from Loki within 30s")


def test_loki_is_installed_as_roles_loki_package_says(node):
    installed_as_its_facts_say(node, PACKAGE)


def test_lokis_checker_runs_on_the_live_config_and_refuses_a_broken_one(node):
    checker_runs(node, PACKAGE, "no_such_setting: true\n")
