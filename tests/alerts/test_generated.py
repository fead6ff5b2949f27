"""The committed alerts/generated/ is what thresholds.yaml renders to, and promtool passes it for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from homelab.alerts.catalog import CATALOG, TLS_CHECK_JOB
from homelab.alerts.cli import main
from homelab.alerts.render import (
    GENERATED_DIR,
    RULES_GLOB,
    SLOS_FILE,
    THRESHOLDS_FILE,
    generated_files,
    load_slos,
    load_thresholds,
    require_current_rules,
    stale_generated_files,
    write_generated,
)
from homelab.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool missing: apt-get install prometheus")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    assert main(["render", str(THRESHOLDS_FILE), "--out", str(out)]) == 0
    return out


def relative_files(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): path.read_text() for path in sorted(root.rglob("*.yml"))}


def test_committed_generated_files_are_current(rendered):
    stale = sorted(set(relative_files(rendered).items()) ^ set(relative_files(GENERATED_DIR).items()))
    assert not stale, (
        f"alerts/generated/ is stale ({', '.join(sorted({name for name, _ in stale}))}): "
        "run `.venv/bin/alerts render` and commit alerts/generated/"
    )


@needs_promtool
def test_promtool_checks_the_rules(rendered):
    rules = sorted(map(str, rendered.glob(RULES_GLOB)))
    result = subprocess.run([PROMTOOL, "check", "rules", *rules], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass(rendered):
    tests = sorted(map(str, rendered.glob("tests/*.test.yml")))
    result = subprocess.run([PROMTOOL, "test", "rules", *tests], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_unit_tests_catch_a_rule_with_the_wrong_threshold(rendered, tmp_path):
    """The generated tests pin each threshold: a rule edited by hand to another value fails them."""
    shutil.copytree(rendered, tmp_path / "out")
    rules = tmp_path / "out" / "node.rules.yml"
    rules.write_text(rules.read_text().replace(
        "node_memory_MemTotal_bytes) > 60", "node_memory_MemTotal_bytes) > 80"))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "out/tests/node.test.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "HostMemoryHigh warning fires" in result.stdout + result.stderr


def all_rules(root: Path) -> list[dict]:
    """Every alerting rule (the SLOs' recording rules left out)."""
    return [rule for path in sorted(root.glob(RULES_GLOB))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_severity_summary_description_and_an_existing_runbook(rendered):
    repo_url = load_thresholds().repo_url
    rules = all_rules(rendered)
    assert {rule["alert"] for rule in rules} >= {
        "InstanceDown", "HostMemoryHigh", "HostLoadHigh", "HostDiskFillingUp", "ProbeFailed", "ProbeSlow",
        "ToyRedisDown", "ToyRedisLatencyHigh", "ToyRedisMemoryGrowing", "ToyRedisExpiredKeysNotReclaimed",
        "Nginx5xxRatioHigh", "AlertRelayDown", "AlertRelayDeadLetters",
    }
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == f"{repo_url}/docs/runbooks/{name}.md"
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.is_file(), f"{name} has no runbook: write docs/runbooks/{name}.md"
        text = runbook.read_text()
        for section in ("## What it means", "## How to confirm", "## How to fix"):
            assert section in text, f"{runbook.name} lacks '{section}'"


def test_every_runbook_belongs_to_an_alert(rendered):
    alerts = {rule["alert"] for rule in all_rules(rendered)}
    pages = {path.stem for path in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == alerts


def test_memory_warning_is_the_notes_sixty_percent(rendered):
    memory = [rule for rule in all_rules(rendered) if rule["alert"] == "HostMemoryHigh"]
    assert {rule["labels"]["severity"]: rule["expr"].rsplit(" ", 1)[-1] for rule in memory} == \
        {"warning": "60", "critical": "90"}


def test_probe_slow_averages_probe_durations_over_the_window(rendered):
    (rule,) = [rule for rule in all_rules(rendered)
               if rule["alert"] == "ProbeSlow" and rule["labels"]["severity"] == "warning"]
    # The health probes only: the TLS checks' probes are ScrapeTLSOrLoginFailing's.
    assert rule["expr"] == f'avg_over_time(probe_duration_seconds{{job!="{TLS_CHECK_JOB}"}}[25m]) * 1000 > 300'


def edited_thresholds(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(THRESHOLDS_FILE.read_text())
    edit(data)
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_disabled_alert_leaves_no_rule_and_an_emptied_group_leaves_no_file(tmp_path):
    def disable(data):
        for name in [alert.name for alert in CATALOG if alert.group == "alert-relay"] + ["HostLoadHigh"]:
            data["alerts"][name]["enabled"] = False

    out = tmp_path / "out"
    shutil.copytree(GENERATED_DIR, out)
    assert main(["render", str(edited_thresholds(tmp_path, disable)), "--out", str(out)]) == 0
    assert not (out / "alert-relay.rules.yml").exists()
    assert not (out / "tests" / "alert-relay.test.yml").exists()
    assert "HostLoadHigh" not in (out / "node.rules.yml").read_text()
    assert "HostMemoryHigh" in (out / "node.rules.yml").read_text()


def test_a_changed_threshold_reaches_the_rule(tmp_path):
    def raise_memory_warning(data):
        data["alerts"]["HostMemoryHigh"]["warning_percent"] = 70

    files = generated_files(load_thresholds(edited_thresholds(tmp_path, raise_memory_warning)), load_slos(SLOS_FILE))
    assert "node_memory_MemTotal_bytes) > 70" in files["node.rules.yml"]
    assert "(warning above 70%)" in files["tests/node.test.yml"]


def test_deploy_refuses_rules_not_rendered_from_the_current_thresholds(tmp_path):
    out = tmp_path / "out"
    write_generated(generated_files(load_thresholds(), load_slos(SLOS_FILE)), out)
    current = require_current_rules(THRESHOLDS_FILE, out)
    assert current == {path.name: path.read_text() for path in sorted(out.glob(RULES_GLOB))}

    edited = edited_thresholds(tmp_path, lambda data: data["alerts"]["HostMemoryHigh"].update(warning_percent=70))
    assert stale_generated_files(generated_files(load_thresholds(edited), load_slos(SLOS_FILE)), out) == [
        "node.rules.yml", "tests/node.test.yml"]
    with pytest.raises(ConfigError, match=r"out of date with .*thresholds.yaml \(node.rules.yml, "
                                          r"tests/node.test.yml\): run `alerts render`"):
        require_current_rules(edited, out)


# Thresholds a user may well write that strain the test generator: levels a hair apart, tiny
# values, `for: 0s`, durations that are not whole test steps, disk horizons closer than a test run.
UNUSUAL_THRESHOLDS = {
    "levels close together": {
        "HostMemoryHigh": {"warning_percent": 60, "critical_percent": 60.1},
        "Nginx5xxRatioHigh": {"warning_percent": 0.01, "critical_percent": 99.99},
        "ToyRedisLatencyHigh": {"warning_ms": 0.05, "critical_ms": 0.051},
        "ProbeSlow": {"warning_ms": 299.95, "critical_ms": 300.05},
        "HostLoadHigh": {"warning_per_core": 0.001, "critical_per_core": 0.002},
    },
    "odd durations": {
        "HostMemoryHigh": {"for": "0s"},
        "InstanceDown": {"for": "10s"},
        "ProbeSlow": {"for": "1m30s"},
        "AlertRelayDeadLetters": {"for": "0s"},
        "ToyRedisExpiredKeysNotReclaimed": {"stale_percent": 99.99},
        "ToyRedisMemoryGrowing": {"mib_per_hour": 0.001, "window": "5m", "for": "7s"},
    },
    "disk horizons close together": {
        "HostDiskFillingUp": {"warning_hours": 5, "critical_hours": 4.5, "for": "30m",
                              "free_percent_below": 99.5, "window": "1h"},
    },
    "disk horizons far apart": {
        "HostDiskFillingUp": {"warning_hours": 1000, "critical_hours": 0.1, "for": "0s", "free_percent_below": 0.5},
    },
}


@needs_promtool
@pytest.mark.parametrize("variant", UNUSUAL_THRESHOLDS, ids=list(UNUSUAL_THRESHOLDS))
def test_generated_unit_tests_pass_for_unusual_thresholds(variant, tmp_path):
    def apply(data):
        for alert, keys in UNUSUAL_THRESHOLDS[variant].items():
            data["alerts"][alert].update(keys)

    out = tmp_path / "out"
    write_generated(generated_files(load_thresholds(edited_thresholds(tmp_path, apply)), load_slos(SLOS_FILE)), out)
    tests = sorted(map(str, out.glob("tests/*.test.yml")))
    result = subprocess.run([PROMTOOL, "test", "rules", *tests], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
