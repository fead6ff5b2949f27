"""The log shipper on its lab host: the chosen one runs alone, and toy-redis's lines reach Loki labelled."""

from __future__ import annotations

import json
import runpy
import time

import pytest

from tests.conftest import REPO, hosts_in
from tests.hosts.test_grafana import deployed_node

pytestmark = pytest.mark.lab

CHOSEN = runpy.run_path(str(REPO / "inventory/group_data/log_shipper.py"))["log_shipper"]
OTHER = {"promtail": "alloy", "alloy": "promtail"}[CHOSEN]
POSITIONS = {"promtail": "/var/lib/promtail/positions.yaml",
             "alloy": "/var/lib/alloy/data/loki.source.file.toy_redis/positions.yml"}
# Labels the shippers set, plus what they and Loki add on their own (one file, one service).
ALLOWED_LABELS = {"job", "host", "level", "event", "filename", "service_name"}


@pytest.fixture(params=hosts_in("log_shipper"))
def node(request):
    return deployed_node(request, CHOSEN)


@pytest.fixture
def loki_node(request, node, testinfra_hosts):
    return testinfra_hosts[hosts_in("loki")[0]]


def test_only_the_chosen_shipper_runs(node):
    assert node.service(CHOSEN).is_running and node.service(CHOSEN).is_enabled
    assert not node.service(OTHER).is_running


def test_toy_redis_lines_reach_loki_with_low_cardinality_labels(node, loki_node):
    deadline = time.monotonic() + 60
    streams = []
    while time.monotonic() < deadline and not streams:
        answer = json.loads(loki_node.check_output(
            "curl -sfG --data-urlencode 'query={job=\"toy-redis\"}' --data-urlencode 'since=24h' "
            "http://127.0.0.1:3100/loki/api/v1/query_range"))
        streams = answer["data"]["result"]
        time.sleep(1)
    assert streams, "no toy-redis log line reached Loki within 60s"
    for stream in streams:
        labels = stream["stream"]
        assert set(labels) <= ALLOWED_LABELS, f"unexpected labels {sorted(set(labels) - ALLOWED_LABELS)}"
        assert labels["host"] == node.backend.host and "level" in labels and "event" in labels
    assert "/var/log/toy-redis/toy-redis.log" in node.file(POSITIONS[CHOSEN]).content_string
