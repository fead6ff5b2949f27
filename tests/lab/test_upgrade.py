"""`homelab upgrade`: a Debian 12 node running toy-redis, the alert relay and Prometheus, with data,
upgraded in place to Debian 13 (apt full-upgrade against the mirror, reboot, deploy).

A lab of its own (subnet, bridge, state folder), so the reference lab's nodes stay as they are:
old-node (Debian 12) runs the services with data; watch-node (Debian 13) runs Alertmanager, which
holds the maintenance window's silences and stays up while old-node reboots.

The upgrade downloads a few hundred packages; the .debs are kept in the lab's cache folder
(HOMELAB_LAB_CACHE/apt-archives) and put back into the next run's node, so only the first run
downloads them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from homelab import maintenance
from homelab.lab.settings import lab_settings
from homelab.topology import Topology
from homelab.vault import load_vault
from roles.alert_relay import QUEUE_PATH
from tests.conftest import REPO, VENV_BIN, lab_unavailable_reason, run_pyinfra
from tests.hosts.test_alert_relay import alert_payload
from tests.lab.test_lab_tool import run_lab, ssh_out

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UPGRADE_LAB = {"HOMELAB_LAB_SUBNET": "10.83.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabupg0"}
INVENTORY = """\
from homelab.lab.settings import lab_host

_old = lab_host("old-node", 10, debian_release=12)
_watch = lab_host("watch-node", 11)
toy_redis = [_old]
prometheus = [_old]
alert_relay = [_old]
alertmanager = [_watch]
"""
KEYS = 2000
ALERTS = 20
QUEUED = ("import json, sqlite3; db = sqlite3.connect('file:{path}?mode=ro', uri=True); "
          "print(json.dumps(sorted(db.execute('SELECT id, payload FROM messages UNION ALL "
          "SELECT id, payload FROM dead_letters').fetchall())))").format(path=QUEUE_PATH)


@pytest.fixture
def upgrade_lab(tmp_path, monkeypatch):
    """The inventory of a lab of its own, booted; taken down afterwards, its .debs kept."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for key, value in {**UPGRADE_LAB, "HOMELAB_LAB_STATE": str(tmp_path / "state")}.items():
        monkeypatch.setenv(key, value)
    settings = lab_settings()
    inventory = tmp_path / "inventory.py"
    inventory.write_text(INVENTORY)
    (tmp_path / "group_data").symlink_to(REPO / "inventory" / "group_data")
    debs = settings.cache_dir / "apt-archives"
    node_debs = settings.state_dir / "nodes" / "old-node" / "upper" / "var" / "cache" / "apt" / "archives"
    (node_debs / "partial").mkdir(parents=True)
    debs.mkdir(parents=True, exist_ok=True)
    for deb in debs.glob("*.deb"):
        os.link(deb, node_debs / deb.name)
    try:
        up = run_lab("up", str(inventory), timeout=900)
        assert up.returncode == 0, up.stderr
        yield inventory
    finally:
        for deb in node_debs.glob("*.deb"):
            if not (debs / deb.name).exists():
                shutil.copy2(deb, debs / deb.name)
        down = run_lab("down")
        assert down.returncode == 0, down.stderr


def queued(env_node: str) -> list:
    return json.loads(ssh_out({}, env_node, f'python3 -c "{QUEUED}"'))


def boot_time(node: str) -> float:
    """When the node's PID 1 started (its boot), as a Unix time."""
    return float(ssh_out({}, node, "date -d \"$(ps -o lstart= -p 1)\" +%s"))


def window_silences(topology: Topology, node: str) -> list[dict]:
    return [silence for silence in maintenance.alertmanager(topology).silences()
            if silence["comment"].startswith(f"{maintenance.COMMENT_PREFIX}{node}:")]


def test_a_debian_12_node_upgrades_in_place_with_its_data(upgrade_lab):
    inventory = upgrade_lab
    topology = Topology.load(inventory)
    vault = load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")
    first = run_pyinfra("deploys/all.py", inventory=inventory, timeout=1500)
    assert first.returncode == 0 and not first.failed(), first.stderr[-4000:]
    assert ssh_out({}, "old-node", ". /etc/os-release && echo $VERSION_ID") == "12"

    # Data in each service: toy-redis keys (in its AOF), queued relay messages, Prometheus samples.
    toy_redis = topology.endpoint("toy_redis", "old-node", "resp")
    client = redis.Redis(host=toy_redis.address, port=toy_redis.port, password=vault["toy_redis_password"],
                         socket_timeout=10)
    client.mset({f"key:{i}": f"value:{i}" for i in range(KEYS)})
    relay = topology.endpoint("alert_relay", "old-node").url()
    for i in range(ALERTS):
        answer = requests.post(f"{relay}/alertmanager", json=alert_payload(f"UpgradeTest{i}"), timeout=10,
                               headers={"Authorization": f"Bearer {vault['alertmanager_webhook_token']}"})
        assert answer.status_code == 200, answer.text
    messages = queued("old-node")
    assert len(messages) >= ALERTS
    prometheus = topology.endpoint("prometheus").url()
    deadline = time.monotonic() + 120
    while not (samples := requests.get(f"{prometheus}/api/v1/query", params={"query": "up"}, timeout=10)
               .json()["data"]["result"]) and time.monotonic() < deadline:
        time.sleep(2)
    assert samples, "Prometheus scraped nothing before the upgrade"
    sampled_at = samples[0]["value"][0]
    before_upgrade = time.time()

    started = time.monotonic()
    result = subprocess.run([str(VENV_BIN / "homelab"), "upgrade", "old-node", "--inventory", str(inventory)],
                            cwd=REPO, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    print(f"homelab upgrade old-node: {took:.0f} s")

    assert ssh_out({}, "old-node", ". /etc/os-release && echo $VERSION_ID") == "13"
    assert ssh_out({}, "old-node", "python3 --version").startswith("Python 3.13.")
    # Between the reboot and the deploy, the venvs made for Python 3.11 skipped their starts
    # (ExecCondition) instead of crash-looping: no failed start in this boot's journal.
    for service in ("toy-redis", "alert-relay"):
        failed = ssh_out({}, "old-node", f"journalctl -b -o cat -u {service} | grep -c 'Failed with result' || true")
        assert failed == "0", f"{service} failed {failed} times after the reboot"
    # Every key, from the AOF the upgraded toy-redis loaded at start.
    client = redis.Redis(host=toy_redis.address, port=toy_redis.port, password=vault["toy_redis_password"],
                         socket_timeout=10)
    assert client.dbsize() == KEYS
    assert client.mget([f"key:{i}" for i in range(0, KEYS, 97)]) == [f"value:{i}".encode() for i in range(0, KEYS, 97)]
    # Every message still queued or set aside once (Slack is out of the lab's reach): none lost, none
    # doubled. (The maintenance window's own notices to Slack join the queue meanwhile.)
    after_upgrade = queued("old-node")
    assert len({message_id for message_id, _payload in after_upgrade}) == len(after_upgrade)
    assert [message for message in after_upgrade if message in messages] == messages
    # The samples from before the upgrade, read from the TSDB by the upgraded Prometheus.
    after = requests.get(f"{prometheus}/api/v1/query", params={"query": "up", "time": sampled_at}, timeout=10)
    assert sorted(s["metric"]["job"] for s in after.json()["data"]["result"]) == \
        sorted(s["metric"]["job"] for s in samples)

    # The window's silences covered the reboot and were lifted at the end.
    silences = window_silences(topology, "old-node")
    assert silences and all(s["status"]["state"] == "expired" for s in silences)
    rebooted = boot_time("old-node")
    for silence in silences:
        starts = maintenance.parse_time(silence["startsAt"]).timestamp()
        ends = maintenance.parse_time(silence["endsAt"]).timestamp()
        assert before_upgrade - 1 <= starts < rebooted < ends
    assert maintenance.windows(topology) == []

    # Nothing left to do: neither the upgrade nor the deploy changes anything on a second run.
    for deploy in ("deploys/upgrade.py", "deploys/all.py"):
        again = run_pyinfra(deploy, inventory=inventory, timeout=900)
        assert again.returncode == 0, again.stderr[-4000:]
        assert again.changed() == [], deploy
