"""The SLO dashboard generated from alerts/slos.yaml: one budget stat per enabled objective, and its
queries give the right numbers on the recorded series (promtool evaluates them on the generated
rules with errors at a known share of each budget)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from homelab.alerts.render import SLOS_FILE, THRESHOLDS_FILE, generated_files, load_slos, load_thresholds
from homelab.alerts.slo_dashboard import budget_left_expr, burn_rate_expr, dashboard
from homelab.alerts.slos import WINDOWS, Slos
from roles import grafana
from tests.alerts.test_slos import slos_with

PROMTOOL = shutil.which("promtool")
# Errors at this share of the allowed rate: a quarter of the budget spent, three quarters left.
SPENT = 0.25
MINUTES = 40


def exprs(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_one_budget_stat_per_enabled_objective_and_a_disabled_one_is_left_out(tmp_path):
    slos = load_slos(SLOS_FILE)
    board = dashboard(slos)
    stats = [panel for panel in board["panels"] if panel["type"] == "stat"]
    assert [panel["targets"][0]["expr"] for panel in stats] == [budget_left_expr(slo) for slo in slos.enabled()]
    assert all(panel["fieldConfig"]["defaults"]["unit"] == "percentunit" for panel in stats)

    fewer = load_slos(slos_with(tmp_path, "slos.NginxAvailability.enabled", False))
    assert "NginxAvailability" not in json.dumps(dashboard(fewer))
    assert len([p for p in dashboard(fewer)["panels"] if p["type"] == "stat"]) == len(slos.enabled()) - 1


def test_the_grafana_role_provisions_it_from_the_slo_file():
    assert json.loads(grafana.dashboards()["slo-error-budgets.json"]) == dashboard(load_slos(SLOS_FILE))


@pytest.mark.skipif(not PROMTOOL, reason="promtool missing: apt-get install prometheus")
def test_its_queries_show_the_budget_left_and_the_burn_rate(tmp_path):
    slos: Slos = load_slos(SLOS_FILE)
    files = generated_files(load_thresholds(THRESHOLDS_FILE), slos)
    (tmp_path / "slos.rules.yml").write_text(files["slos.rules.yml"])
    board = exprs(dashboard(slos))
    tests = []
    for slo in slos.enabled():
        ratio = float(slo.budget) * SPENT
        checks = {budget_left_expr(slo): 1 - SPENT, burn_rate_expr(slo, WINDOWS[0].long): SPENT}
        assert set(checks) <= set(board)
        tests.append({
            "interval": "1m",
            "input_series": slo.series_for([(ratio, MINUTES)]),
            # Rounded: promtool compares sample values exactly.
            "promql_expr_test": [{"expr": f"round(sum({expr}) * 10000)", "eval_time": f"{MINUTES - 5}m",
                                  "exp_samples": [{"labels": "{}", "value": round(value * 10000)}]}
                                 for expr, value in checks.items()],
        })
    (tmp_path / "dashboard.test.yml").write_text(yaml.safe_dump({"rule_files": ["slos.rules.yml"],
                                                                 "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "dashboard.test.yml")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
