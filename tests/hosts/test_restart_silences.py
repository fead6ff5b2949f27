"""A deploy that restarts a service silences that service's alerts on that node for the restart only.

toy-redis on its lab node is restarted by a config change (one setting moved by one), then put back;
Alertmanager on the lab is asked for the silences the runs left.
"""

from __future__ import annotations

import json
import runpy
import time
from datetime import datetime, timezone

import pytest

from homelab.maintenance import parse_time, alertmanager, restart_matchers
from tests.conftest import REPO, hosts_in, run_pyinfra
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

NODE = hosts_in("toy_redis")[0]
GROUP_DATA = runpy.run_path(str(REPO / "inventory" / "group_data" / "toy_redis.py"))["toy_redis"]
COMMENT = f"restart of toy-redis on {NODE} by a deploy"


def restart_silences(since: datetime) -> list[dict]:
    return [silence for silence in alertmanager(LAB_TOPOLOGY).silences()
            if silence["comment"] == COMMENT and parse_time(silence["startsAt"]) >= since]


def deploy_toy_redis(*data: str):
    run = run_pyinfra("deploys/all.py", "--limit", NODE, "--data", "only_roles=toy_redis",
                      *[arg for item in data for arg in ("--data", item)])
    assert run.returncode == 0 and run.failed() == [], run.stderr[-4000:]
    return run


def test_a_restart_is_silenced_for_its_length_and_a_no_op_run_silences_nothing(deployed):
    started = datetime.now(timezone.utc)
    changed = {**GROUP_DATA, "slowlog_max_len": GROUP_DATA.get("slowlog_max_len", 128) + 1}
    try:
        deploy_toy_redis(f"toy_redis={json.dumps(changed)}")
    finally:
        deploy_toy_redis()  # back to the committed settings: a second restart
    silences = restart_silences(started)
    assert len(silences) == 2, silences
    [wanted] = restart_matchers(LAB_TOPOLOGY, NODE, "toy_redis")
    for silence in silences:
        assert silence["status"]["state"] == "expired"  # lifted when the restart was done
        assert silence["matchers"] == [wanted]
        # Expired at the end of the run, long before the bound it was created with.
        assert (parse_time(silence["endsAt"]) - parse_time(silence["startsAt"])).total_seconds() < 120

    quiet_since = datetime.now(timezone.utc)
    rerun = deploy_toy_redis()
    assert rerun.changed() == [], rerun.changed()
    assert restart_silences(quiet_since) == []


def test_a_restart_with_alertmanager_down_warns_in_one_line_and_deploys(deployed, testinfra_hosts):
    manager_node = testinfra_hosts[LAB_TOPOLOGY.hosts_of("alertmanager")[0]]
    changed = {**GROUP_DATA, "slowlog_max_len": GROUP_DATA.get("slowlog_max_len", 128) + 2}
    manager_node.run("systemctl stop prometheus-alertmanager")
    try:
        run = deploy_toy_redis(f"toy_redis={json.dumps(changed)}")
        warnings = [line for line in run.stderr.splitlines() if "restarts without a silence" in line]
        assert len(warnings) == 1, run.stderr[-4000:]
        assert "cannot reach Alertmanager" in warnings[0]
    finally:
        manager_node.run("systemctl start prometheus-alertmanager")
        deploy_toy_redis()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not manager_node.service("prometheus-alertmanager").is_running:
            time.sleep(0.5)
