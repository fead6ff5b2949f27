"""alerts/slos.yaml: validated with one-line errors, compiled into burn-rate alerts whose generated
promtool tests pass and catch a rule that does not alert at its burn rate."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from homelab.alerts.cli import main
from tests.alerts.edited_yaml import yaml_with
from homelab.alerts.render import GENERATED_DIR, SLOS_FILE, THRESHOLDS_FILE
from homelab.alerts.slos import CATALOG, WINDOWS, load_slos
from toy_redis.metrics import LATENCY_BUCKETS

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool missing: apt-get install prometheus")


def slos_with(tmp_path: Path, dotted_key: str, value) -> Path:
    """The committed SLO file with one key set (or, for value ..., removed)."""
    return yaml_with(SLOS_FILE, tmp_path, dotted_key, value)


BUCKETS_MS = ", ".join(format(Decimal(repr(bound * 1000)).normalize(), "f") for bound in LATENCY_BUCKETS)

BAD_INPUTS = {
    "unknown objective": ("slos.RedisUptime", {"objective_percent": 99, "period": "30d"}, "slos.RedisUptime: unknown key"),
    "objective missing": ("slos.ToyRedisAvailability.objective_percent", ...,
                          "slos.ToyRedisAvailability.objective_percent: required key is missing"),
    "objective of 100": ("slos.ToyRedisAvailability.objective_percent", 100,
                         "slos.ToyRedisAvailability.objective_percent: expected a percent above 0 and below 100 (got 100)"),
    "objective too loose to burn 14.4x": (
        "slos.NginxAvailability.objective_percent", 90,
        "slos.NginxAvailability.objective_percent: expected an objective whose 14.4x burn rate is an error ratio "
        "below 1, got 90"),
    "period not a duration": ("slos.ToyRedisLatency.period", "a month",
                              "slos.ToyRedisLatency.period: expected a duration like 30s, 5m, 1h30m or 15d "
                              "(units largest first, each once) (got 'a month')"),
    "period too short to burn": ("slos.ToyRedisLatency.period", "2d",
                                 "slos.ToyRedisLatency.period: expected a period long enough that spending 2% "
                                 "of the budget in 1h is a burn rate above 1, got '2d'"),
    "latency threshold not a bucket bound": ("slos.ToyRedisLatency.threshold_ms", 3,
                                             "slos.ToyRedisLatency.threshold_ms: expected one of toy-redis's latency "
                                             f"bucket bounds (ms): {BUCKETS_MS}; got 3"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_a_bad_slo_file_is_one_line_naming_file_and_key_and_renders_nothing(tmp_path, capsys, case):
    key, value, expected = BAD_INPUTS[case]
    path = slos_with(tmp_path, key, value)
    out = tmp_path / "out"
    assert main(["render", str(THRESHOLDS_FILE), "--slos", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"{path.as_posix()}: {expected}\n"
    assert not out.exists()


def test_check_reports_every_file(capsys):
    assert main(["check", str(THRESHOLDS_FILE), "--slos", str(SLOS_FILE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(f"slos.yaml: OK, {len(CATALOG)} objectives enabled")
    assert lines[2].endswith("maintenance.yaml: OK, 0 recurring maintenance windows")


def generated_rules() -> list[dict]:
    return yaml.safe_load((GENERATED_DIR / "slos.rules.yml").read_text())["groups"][0]["rules"]


def test_a_30_day_objective_pages_at_the_workbooks_burn_rates():
    """The SRE workbook's table for 30 days: 14.4x over 1h and 5m, 6x over 6h and 30m."""
    slos = load_slos(SLOS_FILE)
    for slo in slos.enabled():
        assert slo.period == "30d"
        budget = (100 - Decimal(repr(slo.objective_percent))) / 100
        alerts = [rule for rule in generated_rules() if rule.get("alert") == f"{slo.name}ErrorBudgetBurn"]
        by_window = {rule["labels"]["window"]: rule["expr"] for rule in alerts}
        for (long, short, factor) in (("1h", "5m", Decimal("14.4")), ("6h", "30m", Decimal(6))):
            limit = format((factor * budget).normalize(), "f")
            assert by_window[long] == (f'slo:error_ratio:rate{long}{{slo="{slo.name}"}} > {limit} and '
                                       f'slo:error_ratio:rate{short}{{slo="{slo.name}"}} > {limit}')
    assert [(w.long, w.short) for w in WINDOWS] == [("1h", "5m"), ("6h", "30m")]


@needs_promtool
def test_generated_tests_catch_a_rule_that_does_not_alert_at_its_burn_rate(tmp_path):
    """Each SLO's tests pin its thresholds and the short window: a rule loosened by hand fails them."""
    out = tmp_path / "out"
    assert main(["render", "--out", str(out)]) == 0
    rules = out / "slos.rules.yml"
    original = rules.read_text()
    for name in ("ToyRedisAvailability", "NginxAvailability"):
        fast = next(rule["expr"] for rule in generated_rules()
                    if rule.get("alert") == f"{name}ErrorBudgetBurn" and rule["labels"]["window"] == "1h")
        limit = fast.rsplit(" ", 1)[-1]
        for broken in (fast.replace(f"> {limit}", f"> {Decimal(limit) * Decimal('1.2')}", 1),  # threshold too high
                       fast.split(" and ")[0]):  # no short window: keeps paging after the errors stop
            rules.write_text(original.replace(fast, broken))
            result = subprocess.run([PROMTOOL, "test", "rules", str(out / "tests" / "slos.test.yml")],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 1, broken
            assert f"{name}ErrorBudgetBurn" in result.stdout + result.stderr
    rules.write_text(original)


def test_deploy_refuses_rules_not_rendered_from_the_current_slo_file(tmp_path):
    from homelab.alerts.render import generated_files, load_thresholds, require_current_rules, write_generated
    from homelab.config import ConfigError

    out = tmp_path / "out"
    write_generated(generated_files(load_thresholds(), load_slos(SLOS_FILE)), out)
    assert "slos.rules.yml" in require_current_rules(THRESHOLDS_FILE, out, SLOS_FILE)
    edited = slos_with(tmp_path, "slos.ToyRedisAvailability.objective_percent", 99.95)
    with pytest.raises(ConfigError, match=r"out of date with .*/slos.yaml \(slos.rules.yml, tests/slos.test.yml\)"):
        require_current_rules(THRESHOLDS_FILE, out, edited)
