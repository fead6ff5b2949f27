"""`homelab maintenance start/end` tell Slack: a notice through the real relay (to the fake Slack),
routed like the node's alerts, the end threaded under the start; an unreachable relay costs only the notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab.cli import main
from homelab.topology import Topology
from homelab.vault import load_vault
from roles.alertmanager import TOKEN_SECRET
from tests.alert_relay.conftest import ALERTMANAGER, make_relay, slack, faxplus, wait_for  # noqa: F401 - fixtures
from tests.local_monitoring import alertmanager, loopback_inventory

pytestmark = pytest.mark.skipif(not Path(ALERTMANAGER).exists(),
                                reason="needs Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)")

VAULT = {"vault_file": "secrets/lab.vault.yml", "vault_password_file": "secrets/lab.vault-password"}


@pytest.fixture
def cluster(tmp_path):
    inventory = loopback_inventory(tmp_path, host_data=VAULT)
    topology = Topology.load(inventory)
    with alertmanager(tmp_path / "alertmanager", topology):
        yield inventory, topology


def test_a_window_start_and_end_reach_the_nodes_channel_threaded(cluster, make_relay, slack, tmp_path, capsys):
    inventory, topology = cluster
    token = tmp_path / "am.token"
    token.write_text(load_vault(VAULT["vault_file"], VAULT["vault_password_file"])[TOKEN_SECRET] + "\n")
    token.chmod(0o600)
    make_relay(listen=topology.endpoint("alert_relay").netloc, alertmanager_token_file=str(token))

    reason = "kernel upgrade <!channel> *now*"
    assert main(["maintenance", "start", "worker-node-12", "--for", "30m", "--reason", reason,
                 "--inventory", str(inventory)]) == 0
    assert capsys.readouterr().err == ""
    [post] = wait_for(lambda: slack.calls_of("chat.postMessage"), 30, "the start notice")
    assert post.params["channel"] == "#homelab-alerts"  # the routes' channel for the node's info alerts
    assert post.params["text"].startswith("[FIRING:1] MaintenanceWindow (info): Maintenance of worker-node-12 until ")
    assert "<!channel>" not in str(post.params)  # the relay's escaping applies to the reason too

    assert main(["maintenance", "end", "worker-node-12", "--inventory", str(inventory)]) == 0
    assert capsys.readouterr().err == ""
    [update] = wait_for(lambda: slack.calls_of("chat.update"), 30, "the end notice")
    assert update.params["ts"] == post.params["ts"] and update.params["text"].startswith("[RESOLVED] MaintenanceWindow")
    wait_for(lambda: [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts") == post.params["ts"]],
             10, "the thread reply")


def test_an_unreachable_relay_is_one_warning_line_and_the_window_still_starts(cluster, capsys):
    inventory, topology = cluster  # no relay runs
    assert main(["maintenance", "start", "worker-node-12", "--for", "5m", "--reason", "x",
                 "--inventory", str(inventory)]) == 0
    url = topology.endpoint("alert_relay").url("/alertmanager")
    assert capsys.readouterr().err == (f"homelab: warning: no Slack notice: cannot reach the alert relay at {url} "
                                       "(ConnectionError)\n")
    capsys.readouterr()
    assert main(["maintenance", "list", "--inventory", str(inventory)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("worker-node-12 ")
