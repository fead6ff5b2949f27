"""alert-relay on its lab hosts: accepting Alertmanager's webhook with the vault's token, sandboxed, idempotent."""

import re
import time

import pytest
import requests

from homelab.vault import load_vault
from roles.alert_relay import APP, DATA_DIR, QUEUE_PATH, TOKEN_FILES, TOKEN_MODE, token_path
from roles.python_app import build_wheels
from roles.tuning.settings import load_tuning
from tests.conftest import REPO, hosts_in, run_pyinfra, wheel_target
from tests.hosts.python_app_checks import check_runs_as_its_own_user, check_sandboxed
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")


@pytest.fixture(scope="module")
def vault() -> dict[str, str]:
    return load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")


@pytest.fixture(params=hosts_in("alert_relay"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


@pytest.fixture
def relay(node):
    """The node's relay as the control machine reaches it (homelab.access)."""
    return LAB_TOPOLOGY.access("alert_relay", node.backend.hostname)


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        if labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def alert_payload(name: str) -> dict:
    return {
        "version": "4", "groupKey": f"{{}}:{{alertname=\"{name}\"}}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "alert-relay", "groupLabels": {"alertname": name}, "commonLabels": {"alertname": name},
        "commonAnnotations": {}, "externalURL": "http://worker-node-14:9093",
        "alerts": [{
            "status": "firing", "labels": {"alertname": name, "severity": "warning", "instance": "lab"},
            "annotations": {"summary": "lab test", "description": "sent by tests/hosts/test_alert_relay.py"},
            "startsAt": "2024-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://worker-node-14:9090/graph", "fingerprint": f"{abs(hash(name)):016x}",
        }],
    }


def test_service_enabled_and_running_as_its_own_user(node):
    check_runs_as_its_own_user(node, APP)


def test_sandboxed_with_the_tuned_file_limit(node):
    check_sandboxed(node, APP, {DATA_DIR}, TUNING.limits.nofile)


def test_healthz_and_metrics_answer_over_the_lab_network(relay):
    assert relay.get("/healthz").status_code == 200
    text = relay.get("/metrics").text
    assert "alert_relay_queue_depth" in text and "alert_relay_dead_letters" in text


def test_alertmanager_webhook_takes_the_vault_token_and_refuses_others(node, relay, vault):
    name = f"LabRelayTest{time.time_ns()}"
    # The webhook authenticates by its bearer token, as Alertmanager sends it, not by the operator's login.
    wrong = requests.post(relay.url("/alertmanager"), json=alert_payload(name), timeout=5, verify=relay.verify,
                          headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    before = metric(relay.get("/metrics").text, "alert_relay_accepted_total")
    accepted = requests.post(relay.url("/alertmanager"), json=alert_payload(name), timeout=5, verify=relay.verify,
                             headers={"Authorization": f"Bearer {vault['alertmanager_webhook_token']}"})
    assert accepted.status_code == 200, accepted.text
    after = metric(relay.get("/metrics").text, "alert_relay_accepted_total")
    assert after == before + 1
    # Durably queued in the service's state folder.
    queue = node.file(QUEUE_PATH)
    assert queue.exists and queue.user == APP.service


def test_token_files_and_the_queue_are_not_readable_by_others(node, vault):
    processes = node.check_output("ps -eo args")
    for secret in TOKEN_FILES.values():
        token = node.file(token_path(secret))
        assert (token.user, token.group, token.mode) == ("root", APP.service, int(TOKEN_MODE, 8)), secret
        assert token.content_string.strip() == vault[secret]
        assert vault[secret] not in processes
    assert node.file("/etc/alert-relay").mode == 0o750
    # The queue holds alert texts and fax metadata: the service's alone.
    queue = node.file(QUEUE_PATH)
    assert (queue.user, queue.mode) == (APP.service, 0o600)


def test_runs_the_wheels_built_on_the_control_machine(node):
    expected = build_wheels(APP.source_dir, wheel_target(node)).digest
    assert node.check_output(f"readlink {APP.current}") == f"venvs/{expected}"
    assert node.check_output(f"ls {APP.home}/venvs") == expected


def test_second_deploy_changes_nothing(node):
    rerun = run_pyinfra("deploys/all.py", "--limit", node.backend.hostname, "--data", "only_roles=alert_relay")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert rerun.failed() == []
    assert rerun.changed() == [], f"a second run changed: {rerun.changed()}"
