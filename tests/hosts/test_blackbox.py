"""blackbox_exporter on its lab host: running with our modules, and its probes of the lab succeeding."""

from __future__ import annotations

import json

import pytest

from roles.blackbox import CONFIG_FILE, render_config
from roles.prometheus import probe_job
from tests.conftest import hosts_in, run_pyinfra
from tests.roles.test_blackbox import lab_settings
from tests.roles.test_prometheus import LAB

pytestmark = pytest.mark.lab


@pytest.fixture(params=hosts_in("blackbox"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


def test_exporter_runs_with_the_modules_from_group_data(node):
    service = node.service("prometheus-blackbox-exporter")
    assert service.is_running and service.is_enabled
    assert node.file(CONFIG_FILE).content_string == render_config(lab_settings())
    assert node.socket("tcp://0.0.0.0:9115").is_listening or node.socket("tcp://:::9115").is_listening


def test_every_configured_probe_succeeds_from_the_exporter(node):
    # The probes Prometheus asks the exporter for, as roles/prometheus generates them.
    probes, _ = probe_job(LAB)
    assert probes.targets
    for target in probes.targets:
        metrics = node.check_output(
            f"curl -sf 'http://127.0.0.1:9115/probe?module={target.module}&target={target.address}'")
        assert "\nprobe_success 1" in metrics, f"{target.module} probe of {target.instance} failed"


def test_a_config_failing_the_exporters_check_is_never_swapped_in(node):
    """The deploy fails with the checker's message; the live config and the running exporter stay."""
    before = node.file(CONFIG_FILE).content_string
    pid = node.check_output("systemctl show -p MainPID --value prometheus-blackbox-exporter")
    broken = {"modules": {"web": {"prober": "http", "http": {"valid_status_code": [200]}}}}
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
