"""Grafana on its lab host: only on its unix socket, behind nginx, provisioned, anonymous access refused.

Grafana's packages come from apt.grafana.com or from offline release assets in artifacts/<component>;
where neither can be had, these tests skip with that reason rather than fail the deploy's checks.
What the package installs is checked against roles/grafana/package.py, the facts the role relies on.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from importlib import import_module

import pytest
import requests

from homelab.vault import load_vault
from roles import grafana
from roles.grafana.package import DATA_DIR, PACKAGE
from roles.grafana_repo import GRAFANA_APT_SUITE, GRAFANA_APT_URL, VendorPackage
from tests.conftest import REPO, hosts_in, run_pyinfra
from tests.roles.test_grafana_repo import pinned_install
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab


def grafana_packages_unavailable(component: str) -> str | None:
    """Why ``component`` cannot be installed on the lab's nodes from here, or None when it can."""
    install = pinned_install(component)
    if install.source == "offline":
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
        package = import_module(f"roles.{component}.package").PACKAGE
        asset = REPO / install.artifacts_dir / component / package.asset_name(install.version, arch)
        return None if asset.is_file() else f"{component} is set to install offline, but {asset} is missing"
    try:
        requests.head(f"{GRAFANA_APT_URL}/dists/{GRAFANA_APT_SUITE}/InRelease", timeout=5).raise_for_status()
        return None
    except requests.RequestException:
        return (f"Grafana's apt repository ({GRAFANA_APT_URL}) is not reachable from this machine, and group data "
                f"installs {component} from it (source 'offline' with its release asset in artifacts/{component}/ "
                "would do)")


def deployed_node(request, component: str):
    """The testinfra host of ``group`` after the deploy; skipped first when the packages cannot be had."""
    reason = grafana_packages_unavailable(component)
    if reason:
        pytest.skip(reason)
    request.getfixturevalue("deployed")
    return request.getfixturevalue("testinfra_hosts")[request.param]


def installed_as_its_facts_say(node, package: VendorPackage) -> None:
    """The package on ``node`` has the binary, unit, user and group its facts module names."""
    assert node.file(package.binary).exists and node.file(package.binary).mode & 0o111
    for wrapper in package.wrappers:
        assert node.file(wrapper).exists
    exec_start = node.check_output(f"systemctl show -p ExecStart --value {package.unit}")
    assert f"path={package.exec_start.split()[0]} " in exec_start
    assert node.check_output(f"systemctl show -p User --value {package.unit}") == package.user
    assert node.check_output(f"id -gn {package.user}") == package.group
    for group in package.extra_groups:
        assert group in node.user(package.user).groups


def checker_runs(node, package: VendorPackage, broken: str) -> None:
    """The packaged checker accepts the live config and refuses ``broken`` (so it really checks)."""
    result = node.run(package.check.format(staged=shlex.quote(package.config_file)))
    assert result.rc == 0, result.stderr
    scratch = f"/tmp/homelab-check-{uuid.uuid4().hex}"
    node.check_output(f"printf %s {shlex.quote(broken)} > {scratch}")
    try:
        assert node.run(package.check.format(staged=scratch)).rc not in (0, 126, 127)
    finally:
        node.run(f"rm -f {scratch}")


@pytest.fixture(params=hosts_in("grafana"))
def node(request):
    return deployed_node(request, "grafana")


def vault_password() -> str:
    return load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")["grafana_admin_password"]


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
    nginx = LAB_TOPOLOGY.access("nginx", node.backend.hostname)
    health = nginx.get("/api/health", headers={"Host": node.backend.host})
    assert health.status_code == 200 and health.json()["database"] == "ok"


def test_anonymous_access_is_refused(node):
    nginx = LAB_TOPOLOGY.access("nginx", node.backend.hostname)
    # No login at all (the access helper's session would send the operator's).
    answer = requests.get(nginx.url("/api/search"), headers={"Host": node.backend.host}, verify=nginx.verify, timeout=5)
    assert answer.status_code == 401


def test_admin_password_is_in_a_private_file_and_nowhere_in_grafana_ini(node):
    secret = node.file(grafana.ADMIN_PASSWORD_FILE)
    assert secret.user == "root" and secret.group == "grafana" and secret.mode == 0o640
    password = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")["grafana_admin_password"]
    config = node.file(grafana.CONFIG_FILE)
    assert f"admin_password = $__file{{{grafana.ADMIN_PASSWORD_FILE}}}" in config.content_string
    assert password not in config.content_string


def test_repo_dashboards_and_datasources_are_provisioned(node):
    found = {item["uid"] for item in admin_get(node, "/api/search?type=dash-db")}
    assert {json.loads(text)["uid"] for text in grafana.dashboards().values()} <= found
    sources = {item["uid"]: item for item in admin_get(node, "/api/datasources")}
    assert {"prometheus", "loki", "alertmanager"} <= set(sources)
    assert sources["prometheus"]["url"] == LAB_TOPOLOGY.access("prometheus").url()
    assert admin_get(node, "/api/datasources/uid/prometheus/health")["status"] == "OK"


def test_grafana_is_installed_as_roles_grafana_package_says(node):
    installed_as_its_facts_say(node, PACKAGE)
    assert pinned_install("grafana").version in node.check_output(f"{PACKAGE.binary} -v")


def test_first_deploy_on_a_fresh_master_ends_with_grafana_answering_with_the_vault_password(node):
    # Fresh as far as Grafana goes: no package, no database, no config; then one deploy of the host.
    host = node.backend.host
    node.check_output(f"systemctl stop {PACKAGE.unit}; apt-get purge -y -q {PACKAGE.name} >/dev/null; "
                      f"rm -rf {DATA_DIR} /etc/grafana")
    run = run_pyinfra("deploys/all.py", "--limit", host)
    assert run.returncode == 0 and not run.failed(), run.stderr[-4000:]
    nginx, headers = LAB_TOPOLOGY.access("nginx", node.backend.hostname), {"Host": host}
    deadline = time.monotonic() + 60
    while True:
        # Grafana's own admin login, not the operator's: requests' auth= replaces the session's.
        answer = nginx.get("/api/user", auth=("admin", vault_password()), headers=headers)
        if answer.status_code != 502 or time.monotonic() > deadline:  # 502: Grafana still starting
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["login"] == "admin"
    assert nginx.get("/api/user", auth=("admin", "not-the-password"), headers=headers).status_code == 401


def test_a_removed_dashboard_file_leaves_grafana(node):
    uid = f"lab-check-{uuid.uuid4().hex[:12]}"
    path = f"{grafana.DASHBOARDS_DIR}/{uid}.json"
    dashboard = json.dumps({"uid": uid, "title": uid, "panels": [], "schemaVersion": 39})
    provider = grafana.render_dashboard_provider()
    interval = int(next(line.split(":")[1] for line in provider.splitlines() if "updateIntervalSeconds" in line))

    def provisioned() -> bool:
        return uid in {item["uid"] for item in admin_get(node, f"/api/search?query={uid}")}

    def wait_for(wanted: bool) -> bool:
        deadline = time.monotonic() + 3 * interval
        while provisioned() != wanted:
            if time.monotonic() > deadline:
                return False
            time.sleep(2)
        return True

    node.check_output(f"printf %s {shlex.quote(dashboard)} > {path} && chown root:{PACKAGE.group} {path} "
                      f"&& chmod 0640 {path}")
    try:
        assert wait_for(True), f"Grafana did not provision {path} within {3 * interval}s"
    finally:
        node.run(f"rm -f {path}")
    assert wait_for(False), f"dashboard {uid} stayed in Grafana {3 * interval}s after its file was removed"
