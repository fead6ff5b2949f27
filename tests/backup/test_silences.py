"""Silences newer than Alertmanager's last snapshot survive a restore: saved from the API, recreated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab import maintenance
from homelab.backup.parts import AlertmanagerSilences
from homelab.topology import Topology
from tests.alert_relay.conftest import ALERTMANAGER
from tests.local_monitoring import alertmanager, loopback_inventory

pytestmark = pytest.mark.skipif(not Path(ALERTMANAGER).exists(),
                                reason="needs Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)")


def test_a_window_opened_just_before_the_backup_is_back_after_restoring_onto_an_empty_alertmanager(tmp_path):
    topology = Topology.load(loopback_inventory(tmp_path))
    host = topology.hosts_of("alertmanager")[0]
    part = AlertmanagerSilences()
    saved = tmp_path / "backup"
    with alertmanager(tmp_path / "before", topology):
        maintenance.start(topology, ["worker-node-12"], "2h", "kernel upgrade")
        expired = maintenance.alertmanager(topology).silences()[0]["id"]
        maintenance.start(topology, ["worker-node-11"], "1h", "disk swap")
        maintenance.alertmanager(topology).expire(expired)  # ended: not to come back
        before = maintenance.windows(topology)
        part.backup(topology, host, None, saved)
    # A freshly deployed node: Alertmanager with an empty data folder, on the same port.
    with alertmanager(tmp_path / "after", topology):
        assert maintenance.windows(topology) == []
        part.restore_through_api(topology, host, saved)
        part.restore_through_api(topology, host, saved)  # a second restore adds nothing
        after = maintenance.windows(topology)
    assert [(w.nodes, w.reason, w.ends, w.created_by) for w in after] == [
        (w.nodes, w.reason, w.ends, w.created_by) for w in before]
    assert sum(len(w.ids) for w in after) == sum(len(w.ids) for w in before)
