"""blackbox_exporter on its lab host: running with our modules, and its probes of the lab succeeding."""

from __future__ import annotations

import pytest

from roles.blackbox import CONFIG_FILE, render_config
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
    settings = lab_settings()
    for probe in settings.probes:
        for member in LAB.get_group(probe.group):
            url = probe.url.replace("{host}", member.data.get("ssh_hostname") or member.name)
            metrics = node.check_output(
                f"curl -sf 'http://127.0.0.1:9115/probe?module={probe.module}&target={url}'")
            assert "\nprobe_success 1" in metrics, f"{probe.module} probe of {url} failed:\n{metrics}"
