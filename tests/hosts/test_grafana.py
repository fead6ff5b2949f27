"""Grafana on its lab host: only on its unix socket, behind nginx, provisioned, anonymous access refused.

Grafana's packages come from apt.grafana.com or from offline .deb files in artifacts/<component>;
where neither can be had, these tests skip with that reason rather than fail the deploy's checks.
"""

from __future__ import annotations

import json

import pytest
import requests

from homelab.vault import load_vault
from roles import grafana
from tests.conftest import REPO, hosts_in

pytestmark = pytest.mark.lab


def grafana_packages_unavailable(component: str) -> str | None:
    """Why ``component`` cannot be installed from this machine, or None when it can."""
    if list((REPO / "artifacts" / component).glob("*.deb")):
        return None
    try:
        requests.head("https://apt.grafana.com/dists/stable/InRelease", timeout=5).raise_for_status()
        return None
    except requests.RequestException:
        return ("Grafana's apt repository (apt.grafana.com) is not reachable from this machine and no offline "
                f"artifacts are in artifacts/{component}")


def deployed_node(request, component: str):
    """The testinfra host of ``group`` after the deploy; skipped first when the packages cannot be had."""
    reason = grafana_packages_unavailable(component)
    if reason:
        pytest.skip(reason)
    request.getfixturevalue("deployed")
    return request.getfixturevalue("testinfra_hosts")[request.param]


@pytest.fixture(params=hosts_in("grafana"))
def node(request):
    return deployed_node(request, "grafana")


def admin_get(node, path: str) -> dict | list:
    """GET a Grafana API path through nginx as admin; the password is read on the node, never put in argv."""
    header = "$(mktemp)"
    script = (
        f"h={header}; "
        "printf 'Authorization: Basic %s\\n' \"$(printf 'admin:%s' \"$(cat /etc/grafana/admin_password)\" | base64 -w0)\" > \"$h\"; "
        f"curl -sf -H @\"$h\" -H 'Host: {node.backend.host}' http://127.0.0.1{path}; status=$?; rm -f \"$h\"; exit $status"
    )
    return json.loads(node.check_output(script))


def test_grafana_runs_on_its_socket_only(node):
    assert node.service("grafana-server").is_running and node.service("grafana-server").is_enabled
    sock = node.file(grafana.SOCKET)
    assert sock.is_socket and sock.group == "grafana" and sock.mode == 0o660
    assert "grafana" in node.user("www-data").groups
    assert "grafana" not in node.check_output("ss -Hltnp")
    assert node.file(grafana.TMPFILES_FILE).contains("/run/grafana")


def test_nginx_serves_grafana_and_its_config_passes_nginx_t(node):
    assert node.run("nginx -t").rc == 0
    health = json.loads(node.check_output(f"curl -sf -H 'Host: {node.backend.host}' http://127.0.0.1/api/health"))
    assert health["database"] == "ok"


def test_anonymous_access_is_refused(node):
    code = node.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {node.backend.host}' "
                             "http://127.0.0.1/api/search")
    assert code == "401"


def test_admin_password_is_in_a_private_file_and_nowhere_in_grafana_ini(node):
    secret = node.file(grafana.ADMIN_PASSWORD_FILE)
    assert secret.user == "root" and secret.group == "grafana" and secret.mode == 0o640
    password = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")["grafana_admin_password"]
    config = node.file(grafana.CONFIG_FILE)
    assert f"admin_password = $__file{{{grafana.ADMIN_PASSWORD_FILE}}}" in config.content_string
    assert password not in config.content_string


def test_repo_dashboards_and_datasources_are_provisioned(node):
    found = {item["uid"] for item in admin_get(node, "/api/search?type=dash-db")}
    assert {json.loads(path.read_text())["uid"] for path in grafana.dashboard_files()} <= found
    sources = {item["uid"]: item for item in admin_get(node, "/api/datasources")}
    assert {"prometheus", "loki", "alertmanager"} <= set(sources)
    assert sources["prometheus"]["url"].endswith(":9090")
    assert admin_get(node, "/api/datasources/uid/prometheus/health")["status"] == "OK"
