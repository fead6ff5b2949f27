"""Drift on a deployed node is found and repaired by the next deploy, exactly and nothing more.

On the toy-redis node, by hand: a managed config file edited, a service stopped, a base package
removed, and one rule deleted from the firewall's loaded table (the ruleset file untouched). The
rerun of deploys/all.py for that node changes exactly the operations that own those four things
(and what follows from them: the restart a config change causes, with its silence, the firewall's
confirmation steps, the deploy stamp), the node is as the deploy wants it again, and a third run
changes nothing. On the relay's node, its queue left root's (as a restore cut short once left it):
the rerun gives it back to the relay and restarts it, and changes nothing else.
"""

from __future__ import annotations

import re
import time

import pytest

from roles.base import BASE_PACKAGES
from roles.firewall import LISTING_INTACT, METRICS_UNIT, TABLE
from roles.node_exporter import SERVICE as NODE_EXPORTER
from roles import alert_relay, python_app
from roles.toy_redis import APP, CONFIG_PATH
from tests.conftest import hosts_in, run_pyinfra
from tests.hosts.test_firewall import loaded_state

pytestmark = pytest.mark.lab

[HOST] = hosts_in("toy_redis")
[RELAY_HOST] = hosts_in("alert_relay")
# A base package nothing else on the node needs, so removing it removes only it.
REMOVED_PACKAGE = "logrotate"
DRIFT_LINE = "# edited by hand on the node\n"


def input_rules(node) -> list[tuple[str, str]]:
    """(handle, rule) of the firewall's input chain as loaded."""
    listing = node.check_output(f"nft -a list chain inet {TABLE} input")
    return re.findall(r"^\s+(.+?) # handle (\d+)$", listing, re.M)


def test_a_rerun_repairs_exactly_what_drifted(deployed, testinfra_hosts):
    node = testinfra_hosts[HOST]
    assert REMOVED_PACKAGE in BASE_PACKAGES
    wanted_config = node.file(CONFIG_PATH).content_string
    # A service port's accept rule (not SSH's: the test's own way back in).
    rules = [(rule, handle) for rule, handle in input_rules(node) if "accept" in rule and "dport 22 " not in rule]
    assert rules, "no accept rule in the firewall's input chain"
    deleted_rule, handle = rules[0]

    node.run_expect([0], f"printf %s {DRIFT_LINE!r} >> {CONFIG_PATH}")
    node.run_expect([0], f"systemctl stop {NODE_EXPORTER}")
    node.run_expect([0], f"DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {REMOVED_PACKAGE}")
    node.run_expect([0], f"nft delete rule inet {TABLE} input handle {handle}")
    assert not node.package(REMOVED_PACKAGE).is_installed
    assert loaded_state(node)[1] != LISTING_INTACT

    rerun = run_pyinfra("deploys/all.py", "--limit", HOST)
    assert rerun.returncode == 0 and not rerun.failed(), rerun.stderr[-4000:]
    changed = {name.split(" | ")[-1] for name, hosts in rerun.changed()}  # without the "role | " prefix
    expected = {
        # The edited file, and toy-redis restarted to read it, its alerts silenced meanwhile.
        "toy-redis config", f"Silence {APP.service}'s alerts on {HOST} during its restart",
        python_app.restart_name(APP), f"Lift the silence of {APP.service}'s alerts on {HOST}",
        f"{NODE_EXPORTER} enabled and running",  # the stopped service
        "Base tools",  # the removed package
        # The deleted rule: the ruleset loaded again, checked, confirmed, its counters written.
        f"Firewall ruleset (table inet {TABLE})", "SSH from this machine still opens after the new ruleset",
        "Confirm the new ruleset (the rollback is called off)", f"Write the drop counters now ({METRICS_UNIT})",
        "Deploy stamp for homelab status",
    }
    assert changed == expected, f"changed but not drifted: {changed - expected}; drifted, not repaired: {expected - changed}"

    assert node.file(CONFIG_PATH).content_string == wanted_config
    assert node.service(NODE_EXPORTER).is_running
    assert node.service(APP.service).is_running
    assert node.package(REMOVED_PACKAGE).is_installed
    assert deleted_rule in [rule for rule, _ in input_rules(node)]
    assert loaded_state(node)[1] == LISTING_INTACT

    again = run_pyinfra("deploys/all.py", "--limit", HOST)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == [], f"a run after the repair changed: {again.changed()}"


def restarts(node, service: str) -> int:
    return int(node.check_output(f"systemctl show -p NRestarts --value {service}"))


def test_a_rerun_gives_the_relay_its_queue_back(deployed, testinfra_hosts):
    node = testinfra_hosts[RELAY_HOST]
    relay = alert_relay.APP.service
    user, group = alert_relay.QUEUE_OWNER.split(":")
    queue = alert_relay.QUEUE_PATH
    assert node.file(queue).exists, "the deployed relay has made its queue"

    node.run_expect([0], f"chown root:root {queue}")
    # The relay checks its queue at start, and refuses this one; systemd restarts it (an explicit
    # restart counts from 0), again and again.
    node.run(f"systemctl restart {relay}")
    deadline = time.monotonic() + 30
    while restarts(node, relay) < 1:
        assert time.monotonic() < deadline, f"{relay} did not fail on a queue owned by root"
        time.sleep(0.5)
    assert "read-only" in node.check_output(f"journalctl -u {relay} -n 20 --no-pager")

    rerun = run_pyinfra("deploys/all.py", "--limit", RELAY_HOST)
    assert rerun.returncode == 0 and not rerun.failed(), rerun.stderr[-4000:]
    changed = {name.split(" | ")[-1] for name, hosts in rerun.changed()}
    # The repair restarts the relay (it reads its queue at start), its alerts silenced meanwhile.
    expected = {
        f"{queue}: owner and mode", f"Silence {relay}'s alerts on {RELAY_HOST} during its restart",
        python_app.restart_name(alert_relay.APP), f"Lift the silence of {relay}'s alerts on {RELAY_HOST}",
        "Deploy stamp for homelab status",
    }
    assert changed == expected, f"changed but not drifted: {changed - expected}; drifted, not repaired: {expected - changed}"

    found = node.file(queue)
    assert (found.user, found.group, found.mode) == (user, group, int(alert_relay.QUEUE_MODE, 8))
    settled = restarts(node, relay)
    time.sleep(3)  # longer than the unit's RestartSec: a relay still failing would have restarted
    assert node.service(relay).is_running and restarts(node, relay) == settled

    again = run_pyinfra("deploys/all.py", "--limit", RELAY_HOST)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == [], f"a run after the repair changed: {again.changed()}"
