"""Day-2 operations on the lab: `homelab status` tells the truth in each state, and a maintenance
window mutes a real alert and lets it through once it ends. Each test puts the lab back as it found
it (services started, windows ended), since the healthy-lab check expects no alert."""

from __future__ import annotations

import json
import time
from functools import partial

import pytest

from homelab.cli import main
from homelab.maintenance import alertmanager
from roles.toy_redis import APP
from tests.conftest import LAB_INVENTORY, hosts_in
from tests.hosts.test_prometheus import TARGETS_UP_WITHIN_S, api
from tests.loopback import wait_for
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

REDIS_NODE = hosts_in("toy_redis")[0]
PROMETHEUS_NODE = hosts_in("prometheus")[0]


def status(capsys) -> tuple[int, dict, float]:
    capsys.readouterr()
    started = time.monotonic()
    code = main(["status", "--json", "--inventory", str(LAB_INVENTORY)])
    took = time.monotonic() - started
    return code, json.loads(capsys.readouterr().out), took


def rows_of(report: dict, node: str, service: str) -> list[dict]:
    return [row for row in report["rows"] if row["node"] == node and row["service"] == service]


# The lab's state changes over seconds: poll every 2 s unless a call says otherwise.
wait_until = partial(wait_for, interval=2)


@pytest.fixture
def prometheus_node(deployed, testinfra_hosts):
    return testinfra_hosts[PROMETHEUS_NODE]


@pytest.fixture
def redis_node(deployed, testinfra_hosts):
    node = testinfra_hosts[REDIS_NODE]
    yield node
    node.run(f"systemctl start {APP.service}")


def toy_redis_client():
    """A redis-py client of the lab's toy-redis (TLS when pki.tls is on), logged in with the vault's password."""
    from homelab.vault import load_vault
    from roles.toy_redis import PASSWORD_SECRET

    access = LAB_TOPOLOGY.access("toy_redis", REDIS_NODE, "resp")
    secrets = load_vault(LAB_TOPOLOGY.data(REDIS_NODE, "vault_file"), LAB_TOPOLOGY.data(REDIS_NODE, "vault_password_file"))
    return access.redis(password=secrets[PASSWORD_SECRET], socket_timeout=30)


def serve_a_few_commands() -> None:
    with toy_redis_client() as client:
        for _ in range(20):
            client.ping()


def deploy_stamps(testinfra_hosts) -> dict[str, dict[str, str]]:
    from datetime import datetime, timezone

    from roles.node_exporter import DEPLOY_METRIC, DEPLOY_STAMP_FILE

    found = {}
    for name in LAB_TOPOLOGY.hosts:
        path = f"{LAB_TOPOLOGY.settings(name, 'node_exporter').textfile_directory}/{DEPLOY_STAMP_FILE}"
        text = testinfra_hosts[name].run(f"cat {path}").stdout
        for line in text.splitlines():
            if line.startswith(DEPLOY_METRIC + "{"):
                commit = line.split('commit="', 1)[1].split('"', 1)[0]
                moment = datetime.fromtimestamp(float(line.split()[-1]), timezone.utc).isoformat(timespec="seconds")
                found[name] = {"time": moment, "commit": commit}
    return found


def test_status_tells_the_truth_when_healthy_when_a_service_stops_and_when_prometheus_is_down(
        prometheus_node, redis_node, testinfra_hosts, capsys):
    def all_up():
        _code, report, _took = status(capsys)
        return report if all(row["state"] == "up" for row in report["rows"]) else None

    wait_until(all_up, TARGETS_UP_WITHIN_S, "every target up")
    _code, report, _took = status(capsys)  # its speed: bench/status_bench.py
    # Every target Prometheus has, and only those, with their versions and the nodes' deploy stamps.
    targets = {(t["labels"]["job"], t["labels"]["instance"]) for t in api(prometheus_node, "targets?state=active")["activeTargets"]}
    assert {(row["service"], row["instance"]) for row in report["rows"]} == targets
    [prometheus_row] = rows_of(report, PROMETHEUS_NODE, "prometheus")
    assert prometheus_row["version"] == api(prometheus_node, "status/buildinfo")["version"]
    # The nodes' deploy stamps, as the files on them say (a node no deploy changed has none yet).
    stamps = deploy_stamps(testinfra_hosts)
    wait_until(lambda: status(capsys)[1]["last_deploy"] == stamps, 60, "the deploy stamps to be scraped")
    # An SLO's budget is known once its service has served requests (a fresh lab's toy-redis has
    # none, and its command counters do not exist until then).
    def budget_known():
        serve_a_few_commands()  # traffic on every poll, so its rates are above zero
        answer = status(capsys)[1]
        return answer if any(left is not None for left in answer["error_budget_left"].values()) else None

    report = wait_until(budget_known, 180, "an error budget left, from the SLO recording rules")
    assert report["unreachable"] == []

    redis_node.run(f"systemctl stop {APP.service}")
    down = wait_until(lambda: [row for row in rows_of(status(capsys)[1], REDIS_NODE, "toy-redis") if row["state"] == "down"],
                      60, "toy-redis shown down")
    assert down and status(capsys)[0] == 1

    prometheus_node.run("systemctl stop prometheus")
    try:
        code, report, took = status(capsys)
        assert code == 1 and any(line.startswith("Prometheus: cannot reach Prometheus") for line in report["unreachable"])
        by_unit = {row["service"]: row["state"] for row in report["rows"] if row["node"] == REDIS_NODE}
        assert by_unit["toy-redis"] == "down" and by_unit["node"] == "up"  # asked over SSH
        assert report["last_deploy"] == stamps  # read from the stamp files
        assert took < 30  # each node answers over SSH, in parallel, or is given up on after SSH_TIMEOUT_S
    finally:
        prometheus_node.run("systemctl start prometheus")
        redis_node.run(f"systemctl start {APP.service}")
    wait_until(all_up, TARGETS_UP_WITHIN_S, "every target up again")


def test_a_window_mutes_a_real_alert_which_notifies_once_the_window_ends(redis_node, testinfra_hosts):
    """toy-redis stopped inside a window: ToyRedisDown fires in Prometheus but Alertmanager holds it;
    after `maintenance end`, Alertmanager sends it to the relay (found in the relay's queue, which
    keeps it: the lab cannot reach Slack)."""
    import requests

    from roles.alert_relay import QUEUE_PATH

    manager = alertmanager(LAB_TOPOLOGY)
    relay_node = testinfra_hosts[hosts_in("alert_relay")[0]]

    def queued_since(moment: float) -> int:
        """Messages about ToyRedisDown the relay took in since ``moment`` (nodes share this clock)."""
        script = ("import sqlite3; db = sqlite3.connect('file:" + QUEUE_PATH + "?mode=ro', uri=True); "
                  "print(sum('ToyRedisDown' in payload for (payload,) in db.execute("
                  f"'SELECT payload FROM messages WHERE created > {moment} UNION ALL "
                  f"SELECT payload FROM dead_letters WHERE created > {moment}')))")
        return int(relay_node.check_output(f'python3 -c "{script}"'))

    def held():
        found = [alert for alert in requests.get(f"{manager.url}/api/v2/alerts", timeout=5).json()
                 if alert["labels"].get("alertname") == "ToyRedisDown"]
        return found if found and all(alert["status"]["state"] == "suppressed" for alert in found) else None

    started = time.time()
    assert main(["maintenance", "start", REDIS_NODE, "--for", "15m", "--reason", "lab test: muted alert",
                 "--inventory", str(LAB_INVENTORY)]) == 0
    try:
        redis_node.run(f"systemctl stop {APP.service}")
        wait_until(held, 180, "ToyRedisDown to fire and be held by the window", interval=5)
        time.sleep(35)  # past Alertmanager's group_wait: a notification would have gone by now
        assert queued_since(started) == 0, "the muted alert reached the relay"
    finally:
        assert main(["maintenance", "end", REDIS_NODE, "--inventory", str(LAB_INVENTORY)]) == 0
    try:
        # Still firing: at the group's next flush (group_interval) it is sent.
        wait_until(lambda: queued_since(started) > 0, 330, "the alert to reach the relay after the window", interval=10)
    finally:
        redis_node.run(f"systemctl start {APP.service}")
