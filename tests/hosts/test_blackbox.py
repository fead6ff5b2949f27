"""blackbox_exporter on its lab host: running with our modules, and its probes of the lab succeeding."""

from __future__ import annotations

import json

import pytest

from roles.blackbox import CONFIG_FILE, render_config
from roles.prometheus import PROBE_JOB
from tests.conftest import hosts_in, run_pyinfra
from tests.hosts.test_prometheus import TARGETS_UP_WITHIN_S, api
from tests.loopback import wait_for
from tests.roles.test_blackbox import lab_settings
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab


@pytest.fixture(params=hosts_in("blackbox"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


def test_exporter_runs_with_the_modules_from_group_data(node):
    service = node.service("prometheus-blackbox-exporter")
    assert service.is_running and service.is_enabled
    assert node.file(CONFIG_FILE).content_string == render_config(lab_settings())
    port = lab_settings().listen_port
    assert node.socket(f"tcp://0.0.0.0:{port}").is_listening or node.socket(f"tcp://:::{port}").is_listening


def test_every_configured_probe_succeeds_from_the_exporter(node, testinfra_hosts):
    """Every health probe of the topology, as Prometheus records blackbox's answers: blackbox takes
    probe requests from Prometheus only (the firewall drops anyone else, since it fetches any URL)."""
    probes = LAB_TOPOLOGY.health_probes()
    assert probes
    prometheus = testinfra_hosts[hosts_in("prometheus")[0]]

    def succeeded() -> dict[str, str] | None:
        results = api(prometheus, f'query?query=probe_success{{job="{PROBE_JOB}"}}')["result"]
        found = {result["metric"]["instance"]: result["value"][1] for result in results}
        return found if all(found.get(probe.instance) == "1" for probe in probes) else None

    wait_for(succeeded, TARGETS_UP_WITHIN_S, "every health probe to succeed", interval=2)


def test_a_config_failing_the_exporters_check_is_never_swapped_in(node):
    """The deploy fails with the checker's message; the live config and the running exporter stay."""
    before = node.file(CONFIG_FILE).content_string
    pid = node.check_output("systemctl show -p MainPID --value prometheus-blackbox-exporter")
    broken = {"modules": {"web": {"prober": "http", "http": {"valid_status_code": [200]}}}, "health_module": "web"}
    run = run_pyinfra("deploys/all.py", "--limit", node.backend.host.name, "--data", "only_roles=blackbox",
                      "--data", f"blackbox={json.dumps(broken)}")
    assert run.returncode != 0
    assert "valid_status_code" in run.stderr + json.dumps(run.report or {})
    assert node.file(CONFIG_FILE).content_string == before
    assert node.check_output("systemctl show -p MainPID --value prometheus-blackbox-exporter") == pid
    # The next good deploy clears the failed staged copy.
    run = run_pyinfra("deploys/all.py", "--limit", node.backend.host.name, "--data", "only_roles=blackbox")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not node.file(f"{CONFIG_FILE}.staged").exists
