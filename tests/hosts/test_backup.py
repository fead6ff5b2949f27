"""Backup, destroy the nodes, recreate and redeploy them, restore: the data written before is back.

Writes a Prometheus series (a textfile metric the Prometheus node's node_exporter serves), toy-redis
keys, and an alert the relay cannot deliver (Slack is unreachable from the lab); takes a backup
with `homelab backup`; recreates the nodes holding them (`lab recreate`: empty, new host key);
deploys them again with the relay pointed at a fake Slack on the control machine that is not
started yet; restores with `homelab restore --node`. Then Prometheus answers a query for the series
at a time before the backup, toy-redis has the keys, the relay still holds the alert, and delivers
it once the fake Slack answers.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import uuid

import pytest
import requests

from homelab import cli
from homelab.backup import manifest, newest_backup_time
from homelab.backup.parts import ToyRedis
from homelab.lab import api
from homelab.lab.ssh import ssh_command
from homelab.vault import load_vault
from roles.alert_relay import QUEUE_PATH
from roles.prometheus import STORAGE_PATH
from roles.toy_redis import DATA_DIR
from tests.alert_relay.fakes import FakeSlack
from tests.conftest import LAB_INVENTORY, run_pyinfra
from tests.hosts.test_alert_relay import alert_payload
from tests.roles.test_prometheus import LAB_TOPOLOGY as TOPOLOGY

pytestmark = pytest.mark.lab

PROMETHEUS = TOPOLOGY.hosts_of("prometheus")[0]
TOY_REDIS = TOPOLOGY.hosts_of("toy_redis")[0]
RELAY = TOPOLOGY.hosts_of("alert_relay")[0]
DESTROYED = sorted({PROMETHEUS, TOY_REDIS, RELAY})
KEYS = 500
# Prometheus scrapes every 15s; a restarted relay retries with backoff (at most retry_max_s).
SCRAPE_WAIT_S = 90
DELIVERY_WAIT_S = 420


def on_node(lab, host: str, script: str, input: bytes | None = None) -> str:
    result = subprocess.run(ssh_command(lab, host, "sh -c " + shlex.quote(script)), input=input,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, f"{host}: {script}: {result.stderr.decode()}"
    return result.stdout.decode()


def prometheus_query(query: str, at: float | None = None) -> list[dict]:
    params = {"query": query, **({"time": at} if at is not None else {})}
    response = TOPOLOGY.access("prometheus").get("/api/v1/query", params=params, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for(check, timeout: float, what: str, interval: float = 2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (requests.RequestException, OSError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(interval)


def queued_messages(lab) -> int:
    script = ("import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
              "print(db.execute('SELECT count(*) FROM messages').fetchone()[0])")
    return int(on_node(lab, RELAY, f"python3 -c {shlex.quote(script)} {QUEUE_PATH}"))


def lab_gateway_port(lab) -> tuple[str, int]:
    """An address on the lab bridge the nodes reach, and a port free there now."""
    with socket.socket() as probe:
        probe.bind((str(lab.gateway), 0))
        return str(lab.gateway), probe.getsockname()[1]


def test_backup_then_restore_onto_recreated_nodes(lab, deployed, tmp_path):
    vault = load_vault(TOPOLOGY.data(RELAY, "vault_file"), TOPOLOGY.data(RELAY, "vault_password_file"))
    run = uuid.uuid4().hex[:12]

    # A series only Prometheus's TSDB will hold once the node is gone.
    textfiles = TOPOLOGY.settings(PROMETHEUS, "node_exporter").textfile_directory
    on_node(lab, PROMETHEUS, f"cat > {textfiles}/backup_test.prom.tmp && mv {textfiles}/backup_test.prom.tmp "
                             f"{textfiles}/backup_test.prom", input=f'homelab_backup_test_marker{{run="{run}"}} 1\n'.encode())
    marker = f'homelab_backup_test_marker{{run="{run}"}}'
    wait_for(lambda: prometheus_query(marker), SCRAPE_WAIT_S, "the marker series in Prometheus")
    written_at = time.time()

    with ToyRedis().client(TOPOLOGY, TOY_REDIS) as client:
        client.mset({f"backup-test:{run}:{n}": f"value {n}" for n in range(KEYS)})

    alert = f"BackupTest{run}"
    relay = TOPOLOGY.access("alert_relay", RELAY)  # the webhook's login is its bearer token, not the web login
    accepted = requests.post(relay.url("/alertmanager"), json=alert_payload(alert), timeout=10, verify=relay.verify,
                             headers={"Authorization": f"Bearer {vault['alertmanager_webhook_token']}"})
    assert accepted.ok, accepted.text
    assert queued_messages(lab) >= 1  # Slack (slack.com) is unreachable from the lab

    assert cli.main(["backup", "--to", str(tmp_path), "--inventory", str(LAB_INVENTORY)]) == 0
    folder = tmp_path / manifest.folder_name(newest_backup_time(tmp_path))
    taken = manifest.verify(folder)
    assert {(part.node, part.part) for part in taken.parts} >= {
        (PROMETHEUS, "prometheus"), (TOY_REDIS, "toy_redis"), (RELAY, "alert_relay"), (RELAY, "alertmanager")}
    assert {(skipped.node, skipped.part) for skipped in taken.skipped} >= {
        *((host, "grafana") for host in TOPOLOGY.hosts_of("grafana")),
        *((host, "certificates") for host in TOPOLOGY.hosts if not TOPOLOGY.settings(host, "pki").tls)}
    aof = f"{DATA_DIR}/appendonly.aof"
    aof_entry = taken.files[f"{TOY_REDIS}/toy_redis{aof}"]

    for host in DESTROYED:
        api.recreate(LAB_INVENTORY, host, log=lambda line: None)
    assert on_node(lab, TOY_REDIS, f"test -e {aof} && echo present || echo gone").strip() == "gone"

    address, port = lab_gateway_port(lab)
    slack_url = f"http://{address}:{port}/api/"
    try:
        deploy = run_pyinfra("deploys/all.py", *[arg for host in DESTROYED for arg in ("--limit", host)],
                             "--data", "alert_relay=" + json.dumps({"slack_base_url": slack_url}))
        assert deploy.returncode == 0 and not deploy.failed(), deploy.stderr[-4000:]
        wait_for(lambda: TOPOLOGY.access("prometheus").get("/-/ready", timeout=5).ok,
                 SCRAPE_WAIT_S, "the redeployed Prometheus ready")
        assert not prometheus_query(marker, at=written_at), "a fresh Prometheus knows the series already"

        for host in DESTROYED:
            assert cli.main(["restore", str(folder), "--node", host, "--inventory", str(LAB_INVENTORY)]) == 0

        # The restore checked every file on the nodes against the manifest; the AOF still matches.
        assert on_node(lab, TOY_REDIS, f"sha256sum {aof}").split()[0] == aof_entry["sha256"]
        # The restore waited until Prometheus loaded the restored blocks (Prometheus.check_restored).
        blocks = [json.loads(meta.read_text()) for meta in
                  (folder / PROMETHEUS / "prometheus" / STORAGE_PATH.lstrip("/")).glob("*/meta.json")]
        found = wait_for(lambda: prometheus_query(marker, at=written_at), SCRAPE_WAIT_S,
                         f"the marker series written at {written_at * 1000:.0f} ms, after the restore (restored blocks "
                         f"{[(block['minTime'], block['maxTime'], block['stats']) for block in blocks]})")
        assert found[0]["value"][1] == "1"
        with ToyRedis().client(TOPOLOGY, TOY_REDIS) as client:
            assert client.get(f"backup-test:{run}:0") == b"value 0"
            assert client.get(f"backup-test:{run}:{KEYS - 1}") == f"value {KEYS - 1}".encode()
            assert len(client.keys(f"backup-test:{run}:*")) == KEYS
        assert queued_messages(lab) >= 1, "the restored relay lost its queued alert"

        channels = {"#homelab-alerts": "C0ALERTS", "#homelab-critical": "C0CRIT", "#toy-redis": "C0REDIS",
                    "#vendor-faxes": "C0FAXES"}
        slack = FakeSlack(vault["slack_bot_token"], channels, bind=address, port=port).start()
        try:
            posts = wait_for(lambda: [post for post in slack.posts() if alert in json.dumps(post)],
                             DELIVERY_WAIT_S, "the queued alert delivered to Slack", interval=3)
            assert len(posts) == 1
        finally:
            slack.close()
    finally:
        # Back to the relay's own settings, as every other lab test expects.
        restored = run_pyinfra("deploys/all.py", "--limit", RELAY)
        assert restored.returncode == 0, restored.stderr[-4000:]


def test_a_restore_that_fails_part_way_leaves_the_relay_running(lab, deployed, testinfra_hosts, tmp_path):
    """Forced: the relay's backed-up queue differs from its manifest entry. The restore stops the
    relay, puts the queue back, fails at the check with one line, and starts the relay again, its
    queue its user's (a restore cut short once left it stopped and the queue root's)."""
    from homelab.backup.manifest import BackupError
    from homelab.backup.parts import AlertRelay
    from homelab.backup.run import _restore_one, remotes
    from roles.alert_relay import APP, QUEUE_MODE, QUEUE_OWNER

    node = testinfra_hosts[RELAY]
    with remotes(TOPOLOGY) as remote:
        AlertRelay().backup(TOPOLOGY, RELAY, remote(RELAY), tmp_path)
        with pytest.raises(BackupError) as failed:
            _restore_one(remote(RELAY), AlertRelay(), tmp_path, {QUEUE_PATH.lstrip("/"): {"sha256": "0" * 64}})
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"{RELAY}: restore of alert_relay: failed while checking the files against the manifest (")
    assert message.endswith(f"; {APP.service} started again")
    assert node.service(APP.service).is_running
    found = node.file(QUEUE_PATH)
    assert f"{found.user}:{found.group}" == QUEUE_OWNER and found.mode == int(QUEUE_MODE, 8)
    # Running on the queue it was given back, not just started: /healthz writes to it.
    wait_for(lambda: TOPOLOGY.access("alert_relay", RELAY).get("/healthz", timeout=5).ok, 30, "the relay healthy")
