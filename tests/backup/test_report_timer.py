"""What Prometheus reads about backups, the systemd units that schedule them, settings and CLI errors."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from homelab import cli
from homelab.backup import report, timer
from homelab.backup.settings import BackupSettings, backup_settings
from homelab.config import ConfigError
from homelab.topology import Topology

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "lab.py"
ATTEMPT = datetime(2026, 11, 29, 3, 16, tzinfo=timezone.utc)
SUCCESS = datetime(2026, 11, 28, 3, 15, tzinfo=timezone.utc)


def samples(text: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_failed_attempt_keeps_the_last_success_time():
    values = samples(report.render(ATTEMPT, SUCCESS, failed=True, duration_s=2.5, size_bytes=None))
    assert values == {"homelab_backup_last_attempt_timestamp_seconds": ATTEMPT.timestamp(),
                      "homelab_backup_last_success_timestamp_seconds": SUCCESS.timestamp(),
                      "homelab_backup_last_failed": 1, "homelab_backup_last_duration_seconds": 2.5}


def test_no_backup_ever_reports_time_zero_so_the_stale_alert_fires():
    values = samples(report.render(ATTEMPT, None, failed=False, duration_s=1, size_bytes=10))
    assert values["homelab_backup_last_success_timestamp_seconds"] == 0
    assert values["homelab_backup_last_size_bytes"] == 10


def test_the_metrics_go_to_the_textfile_folder_of_the_first_prometheus_host():
    from roles.node_exporter import Settings

    topology = Topology.load(LAB)
    assert report.destination(topology) == (topology.hosts_of("prometheus")[0], Settings().textfile_directory)


def test_the_metric_names_are_the_ones_the_alerts_watch():
    rules = (REPO / "alerts" / "generated" / "backup.rules.yml").read_text()
    names = samples(report.render(ATTEMPT, SUCCESS, failed=False, duration_s=1, size_bytes=1))
    assert "homelab_backup_last_failed" in rules and "homelab_backup_last_failed" in names
    assert "homelab_backup_last_success_timestamp_seconds" in rules and "homelab_backup_last_success_timestamp_seconds" in names


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze (package systemd) is not installed")
def test_the_units_are_valid_for_systemd(tmp_path):
    settings = BackupSettings()
    written = timer.install(settings, REPO, LAB, unit_dir=tmp_path)
    assert sorted(path.name for path in written) == ["homelab-backup.service", "homelab-backup.timer"]
    service = (tmp_path / "homelab-backup.service").read_text()
    assert f"ExecStart={timer.homelab_binary()} backup --inventory {LAB}" in service
    assert f"OnCalendar={settings.on_calendar}" in (tmp_path / "homelab-backup.timer").read_text()
    # ExecStart's binary must exist for verify: it does, it is this venv's console script.
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, written)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze (package systemd) is not installed")
def test_a_calendar_systemd_rejects_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"backup.on_calendar: expected a systemd calendar expression"):
        timer.install(BackupSettings(on_calendar="*-*-* 25:00:00"), REPO, LAB, unit_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_settings_refuse_a_relative_directory_in_one_line():
    topology = Topology.load(LAB)
    host = topology.hosts[0]
    topology._hosts[host].data.backup = {"directory": "backups"}  # as if group data said so
    for other in topology.hosts[1:]:
        topology._hosts[other].data.backup = {"directory": "backups"}
    with pytest.raises(ConfigError, match=r"^inventory data for all: backup.directory: "):
        backup_settings(topology)


def test_restore_checks_the_manifest_before_reaching_any_node(tmp_path, capsys):
    from tests.backup.test_manifest import NOW, make_backup

    folder = make_backup(tmp_path, NOW)
    aof = next(folder.rglob("appendonly.aof"))
    aof.write_bytes(b"tampered")
    assert cli.main(["restore", str(folder), "--inventory", str(LAB)]) == 1
    error = capsys.readouterr().err
    assert error == f"homelab: {aof}: 8 bytes, manifest.json says 4\n"
