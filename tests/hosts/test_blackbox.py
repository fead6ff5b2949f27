"""blackbox_exporter on its lab host: running with our modules, and its probes of the lab succeeding."""

from __future__ import annotations

import pytest

from roles.blackbox import CONFIG_FILE, render_config
from roles.prometheus import probe_job
from tests.hosts.test_prometheus import skip_unless_deployed
from tests.conftest import hosts_in
from tests.roles.test_blackbox import lab_settings
from tests.roles.test_prometheus import LAB

pytestmark = pytest.mark.lab


@pytest.fixture(params=hosts_in("blackbox"))
def node(request):
    # Skipped before the lab fixtures run: no lab boot or deploy for a role that is not wired in.
    skip_unless_deployed("blackbox")
    request.getfixturevalue("deployed")
    return request.getfixturevalue("testinfra_hosts")[request.param]


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
