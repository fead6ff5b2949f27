"""The healthy lab raises no alert. Named to run before the other lab checks, which raise alerts
on purpose (stopping toy-redis, posting to the relay whose Slack is unreachable from the lab)."""

from __future__ import annotations

import os
import time

import pytest

from homelab.alerts.render import load_thresholds

from tests.hosts.test_prometheus import TARGETS_UP_WITHIN_S, api, node, wait_for_targets  # noqa: F401 - fixture

pytestmark = pytest.mark.lab


def host_load_is_high() -> bool:
    """Lab nodes share this machine's kernel, so their node_load5 is this machine's load average:
    HostLoadHigh on them tells the truth whenever this machine is loaded (a busy CI box, other
    work). Within the few seconds since Prometheus evaluated it, a 5-minute average falls by a few
    percent at most, hence the 0.9."""
    warning_per_core = load_thresholds().alerts.HostLoadHigh.warning_per_core
    return os.getloadavg()[1] / os.cpu_count() >= 0.9 * warning_per_core


def test_no_alert_fires_or_is_pending_on_the_healthy_lab(node):
    _, not_up = wait_for_targets(node)
    assert not not_up, f"targets not up: {not_up}"
    # Every rule group evaluated again after all targets were up: a rule true on the healthy lab
    # shows as pending at once, long before its `for:` would let it fire.
    up_at = node.check_output("date -u +%Y-%m-%dT%H:%M:%S")
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while any(group["lastEvaluation"][:19] <= up_at for group in api(node, "rules")["groups"]):
        assert time.monotonic() < deadline, "rules were not evaluated again"
        time.sleep(5)
    alerts = [(alert["labels"]["alertname"], alert["labels"].get("instance"), alert["state"])
              for alert in api(node, "alerts")["alerts"]]
    if host_load_is_high():
        alerts = [alert for alert in alerts if alert[0] != "HostLoadHigh"]
    assert alerts == [], f"alerts on the healthy lab: {alerts} (load average of this machine: {os.getloadavg()})"
