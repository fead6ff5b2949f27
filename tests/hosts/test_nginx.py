"""nginx on its lab hosts: serving, tuned as the tuning file says, and observed by its exporters."""

import re
import time

import pytest

from roles.tuning.settings import load_tuning
from tests.conftest import REPO, hosts_in
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")


@pytest.fixture(params=hosts_in("nginx"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


def http_get(node, path: str) -> int:
    """The status code of GET ``path`` from the node's nginx, asked from the control machine."""
    return LAB_TOPOLOGY.access("nginx", node.backend.host.name).get(path).status_code


def metric_value(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{[^}]*" + re.escape(labels) + r"[^}]*\}" if labels else r"(\{[^}]*\})?") + r" (\S+)"
    match = re.search(pattern, text)
    return float(match.group(match.lastindex)) if match else 0.0


def test_nginx_serves_static_files_and_health(node):
    assert node.service("nginx").is_running and node.service("nginx").is_enabled
    assert http_get(node, "/healthz") == 200
    assert node.check_output("hostname") in LAB_TOPOLOGY.access("nginx", node.backend.host.name).get("/").text


def test_listen_backlog_and_file_limit_follow_the_tuning_file(node):
    # For a listening socket, ss shows the accept backlog in Send-Q.
    port = LAB_TOPOLOGY.port(node.backend.host.name, "nginx")
    listen = node.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()[0].split()
    assert int(listen[2]) == TUNING.nginx.listen_backlog
    worker = node.check_output("pgrep -f 'nginx: worker process' | head -1")
    limits = node.check_output(f"grep 'Max open files' /proc/{worker}/limits").split()
    assert int(limits[3]) == TUNING.nginx.worker_rlimit_nofile


def test_stub_status_exporter_reports_connections(node):
    assert node.service("prometheus-nginx-exporter").is_running
    metrics = LAB_TOPOLOGY.access("nginx", node.backend.host.name, "exporter").get("/metrics").text
    assert "nginx_up 1" in metrics
    assert "nginx_connections_active" in metrics


def mtail_metrics(node) -> str:
    mtail = LAB_TOPOLOGY.access("nginx", node.backend.host.name, "mtail")
    return mtail.get("/metrics").text


def test_mtail_counts_responses_by_status_class(node):
    assert node.service("mtail").is_running
    before = metric_value(mtail_metrics(node), "nginx_http_responses_total", 'code_class="4xx"')
    for _ in range(3):
        assert http_get(node, "/no-such-page") == 404
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = metric_value(mtail_metrics(node), "nginx_http_responses_total", 'code_class="4xx"')
        if after >= before + 3:
            break
        time.sleep(0.5)
    assert after >= before + 3
