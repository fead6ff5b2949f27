"""A bad thresholds file: one line naming the file and key, exit 2, and nothing rendered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from homelab.alerts import catalog, render
from homelab.alerts.catalog import CATALOG
from homelab.alerts.cli import main
from tests.alerts.edited_yaml import yaml_with
from homelab.alerts.render import THRESHOLDS_FILE

ALERTS_CLI = Path(sys.executable).with_name("alerts")


def write_with(tmp_path: Path, dotted_key: str, value) -> Path:
    """The committed thresholds file with one key set (or, for value ..., removed)."""
    return yaml_with(THRESHOLDS_FILE, tmp_path, dotted_key, value)


DURATION_EXPECTED = "expected a duration like 30s, 5m, 1h30m or 15d (units largest first, each once)"

BAD_INPUTS = {
    "unknown key": ("alerts.HostMemoryHigh.warn_percent", 60,
                    "alerts.HostMemoryHigh.warn_percent: unknown key"),
    "unknown alert": ("alerts.DiskFull", {"enabled": True},
                      "alerts.DiskFull: unknown key"),
    "wrong type": ("alerts.HostMemoryHigh.warning_percent", "sixty",
                   "alerts.HostMemoryHigh.warning_percent: expected a valid number (got 'sixty')"),
    "wrong type (bool)": ("alerts.ToyRedisDown.enabled", "yes",
                          "alerts.ToyRedisDown.enabled: expected a valid boolean (got 'yes')"),
    "percent above 100": ("alerts.HostMemoryHigh.critical_percent", 150,
                          "alerts.HostMemoryHigh.critical_percent: expected a percent above 0 and below 100 (got 150)"),
    "percent below 0": ("alerts.Nginx5xxRatioHigh.warning_percent", -5,
                        "alerts.Nginx5xxRatioHigh.warning_percent: expected a percent above 0 and below 100 (got -5)"),
    "warning not below critical": ("alerts.HostMemoryHigh.warning_percent", 95,
                                   "alerts.HostMemoryHigh.warning_percent: expected below critical_percent (90), got 95"),
    "warning equal to critical": ("alerts.ToyRedisLatencyHigh.warning_ms", 50,
                                  "alerts.ToyRedisLatencyHigh.warning_ms: expected below critical_ms (50), got 50"),
    "disk warning horizon not beyond critical": (
        "alerts.HostDiskFillingUp.warning_hours", 2,
        "alerts.HostDiskFillingUp.warning_hours: expected above critical_hours (4), got 2"),
    "bad duration": ("alerts.HostMemoryHigh.for", "5 minutes",
                     f"alerts.HostMemoryHigh.for: {DURATION_EXPECTED} (got '5 minutes')"),
    # Prometheus refuses these (units largest first, each once), so the compiler must too.
    "duration units out of order": ("alerts.HostMemoryHigh.for", "30m1h",
                                    f"alerts.HostMemoryHigh.for: {DURATION_EXPECTED} (got '30m1h')"),
    "duration unit repeated": ("alerts.Nginx5xxRatioHigh.window", "5m5m",
                               f"alerts.Nginx5xxRatioHigh.window: {DURATION_EXPECTED} (got '5m5m')"),
    "window too short for rate()": ("alerts.Nginx5xxRatioHigh.window", "30s",
                                    "alerts.Nginx5xxRatioHigh.window: expected a window of at least 1m, "
                                    "so that it holds several scrapes (got '30s')"),
    "bad severity": ("alerts.ToyRedisDown.severity", "page",
                     "alerts.ToyRedisDown.severity: expected 'warning' or 'critical' (got 'page')"),
    "negative rate": ("alerts.ToyRedisMemoryGrowing.mib_per_hour", -1,
                      "alerts.ToyRedisMemoryGrowing.mib_per_hour: expected a number above 0 (got -1)"),
    # Leftovers of a target no longer scraped stay visible for fresh_within: at `for` they would fire.
    "fresh window not below for": ("alerts.ScrapeTLSOrLoginFailing.fresh_within", "5m",
                                   "alerts.ScrapeTLSOrLoginFailing.fresh_within: expected at least 30s and below "
                                   "`for` (5m), got '5m'"),
    "missing alert": ("alerts.HostLoadHigh", ...,
                      "alerts.HostLoadHigh: required key is missing"),
    "repo_url not a web address": ("repo_url", "github.com/me/homelab",
                                   "repo_url: expected the repository's web address, like "
                                   "https://github.com/OWNER/REPO/blob/main (got 'github.com/me/homelab')"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_and_key(case, tmp_path, capsys):
    key, value, expected = BAD_INPUTS[case]
    path = write_with(tmp_path, key, value)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"{path}: {expected}\n"
    assert captured.out == ""


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "thresholds.yaml"
    path.write_text("repo_url: https://example.org\nalerts: [\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: line 3: invalid YAML") and err.count("\n") == 1


def test_render_with_a_bad_file_changes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", str(THRESHOLDS_FILE), "--out", str(out)]) == 0
    before = {path: path.read_bytes() for path in out.rglob("*.yml")}
    bad = write_with(tmp_path, "alerts.HostMemoryHigh.warning_percent", 95)
    capsys.readouterr()
    assert main(["render", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert {path: path.read_bytes() for path in out.rglob("*.yml")} == before


def test_console_script_exits_2_with_one_line(tmp_path):
    bad = write_with(tmp_path, "alerts.HostMemoryHigh.critical_percent", 150)
    result = subprocess.run([str(ALERTS_CLI), "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bad}: alerts.HostMemoryHigh.critical_percent: expected a percent above 0 and below 100 (got 150)"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing alert", "duration units out of order", "warning not below critical"])
def test_checks_hold_under_python_optimize(case, tmp_path):
    """`python -O` strips assert statements: no check of the thresholds file may rely on one."""
    key, value, expected = BAD_INPUTS[case]
    path = write_with(tmp_path, key, value)
    result = subprocess.run([sys.executable, "-O", "-m", "homelab.alerts.cli", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (2, f"{path}: {expected}\n")


def test_alerts_section_has_one_required_key_per_catalog_alert(monkeypatch):
    class ExtraAlert(catalog.ToyRedisDown):
        name = "ExtraAlert"

    monkeypatch.setattr(catalog, "CATALOG", (*catalog.CATALOG, ExtraAlert))
    model = render._alerts_model()
    assert list(model.model_fields) == [alert.name for alert in catalog.CATALOG]
    assert all(field.is_required() for field in model.model_fields.values())

    monkeypatch.setattr(catalog, "CATALOG", (*catalog.CATALOG, ExtraAlert))
    with pytest.raises(TypeError, match="repeated: ExtraAlert"):
        render._alerts_model()


def test_committed_file_checks_ok():
    result = subprocess.run([str(ALERTS_CLI), "check"], capture_output=True, text=True, timeout=60,
                            cwd=THRESHOLDS_FILE.parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"alerts/thresholds.yaml: OK, {len(CATALOG)} alerts enabled"  # all of them
