"""The log shipper on its lab host: the chosen one runs alone, and toy-redis's lines reach Loki labelled."""

from __future__ import annotations

import logging
import runpy
import shlex
import time
import uuid
from importlib import import_module

import pytest

from roles.toy_redis import LOG_FILE as TOY_REDIS_LOG_FILE
from tests.conftest import REPO, hosts_in
from tests.hosts.test_grafana import checker_runs, deployed_node, installed_as_its_facts_say
from tests.hosts.test_loki import loki

pytestmark = pytest.mark.lab

CHOSEN = runpy.run_path(str(REPO / "inventory/group_data/log_shipper.py"))["log_shipper"]
OTHER = {"promtail": "alloy", "alloy": "promtail"}[CHOSEN]
PACKAGE = import_module(f"roles.{CHOSEN}.package").PACKAGE
# A config each checker must refuse.
BROKEN = {"promtail": "server: [\n", "alloy": 'loki.write "unclosed" {\n'}
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
        answer = loki(loki_node).get("/loki/api/v1/query_range", params={"query": '{job="toy-redis"}', "since": "24h"}).json()
        streams = answer["data"]["result"]
        time.sleep(1)
    assert streams, "no toy-redis log line reached Loki within 60s"
    for stream in streams:
        labels = stream["stream"]
        assert set(labels) <= ALLOWED_LABELS, f"unexpected labels {sorted(set(labels) - ALLOWED_LABELS)}"
        assert labels["host"] == node.backend.host and "level" in labels and "event" in labels
    assert "/var/log/toy-redis/toy-redis.log" in node.file(POSITIONS[CHOSEN]).content_string


def test_the_shipper_is_installed_as_its_package_facts_say(node):
    installed_as_its_facts_say(node, PACKAGE)


def test_the_shippers_checker_runs_on_the_live_config_and_refuses_a_broken_one(node):
    checker_runs(node, PACKAGE, BROKEN[CHOSEN])


def test_a_toy_redis_json_line_is_shipped_and_loki_returns_it(node, loki_node):
    from toy_redis.logs import JsonLinesFormatter

    marker = f"lab-check-{uuid.uuid4().hex}"
    record = logging.LogRecord("toy_redis", logging.WARNING, __file__, 1, "client_rejected", None, None)
    record.fields = {"peer": "10.77.0.99:40000", "reason": marker}
    line = JsonLinesFormatter().format(record)
    # Appended as toy-redis appends its own lines: one JSON object per line, in the file the shipper tails.
    node.check_output(f"printf '%s\\n' {shlex.quote(line)} >> {TOY_REDIS_LOG_FILE}")
    query = f'{{job="toy-redis", host="{node.backend.host}"}} |= "{marker}"'
    deadline = time.monotonic() + 60
    while True:
        answer = loki(loki_node).get("/loki/api/v1/query_range", params={"query": query, "since": "1h"}).json()
        streams = answer["data"]["result"]
        if streams or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert streams, f"the line with {marker} did not come back from Loki within 60s"
    [stream] = streams
    assert [value for _, value in stream["values"]] == [line]
    assert (stream["stream"]["level"], stream["stream"]["event"]) == ("warning", "client_rejected")
