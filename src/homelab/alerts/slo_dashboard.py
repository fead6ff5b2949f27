"""The Grafana dashboard of the SLOs' error budgets, generated from alerts/slos.yaml.

It reads only what the SLO rules record (homelab.alerts.slos), so it shows exactly the numbers the
burn-rate alerts and `homelab status` use: per objective, the share of its budget left over its
period, that share over time, and how fast the budget burns now (1 = spent exactly by the period's
end; the alerts page at the fast pair's factor).
"""

from __future__ import annotations

import json
from typing import Any

from homelab.alerts.base import num
from homelab.alerts.slos import BUDGET_LEFT, WINDOWS, Slo, Slos, decimal_text, recorded

UID = "slo-error-budgets"
FILE_NAME = f"{UID}.json"
_PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
# Budget left below these shares turns the stat orange, then red.
_WARN_LEFT, _LOW_LEFT = 0.5, 0.25


def budget_left_expr(slo: Slo) -> str:
    return f'{BUDGET_LEFT}{{slo="{slo.name}"}}'


def burn_rate_expr(slo: Slo, window: str) -> str:
    return f'{recorded(window)}{{slo="{slo.name}"}} / {decimal_text(slo.budget)}'


def _target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": _PROMETHEUS, "expr": expr, "legendFormat": legend, "refId": ref}


def _stat(slo: Slo, position: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "stat", "title": f"{slo.title}: budget left",
        "description": f"{num(slo.objective_percent)}% of {slo.events} {slo.good_events()} over {slo.period}: "
                       "the share of the errors allowed over that period not yet spent.",
        "datasource": _PROMETHEUS, "targets": [_target(budget_left_expr(slo), slo.name)],
        "fieldConfig": {"defaults": {"unit": "percentunit", "decimals": 1, "noValue": "no events yet",
                                     "thresholds": {"mode": "absolute", "steps": [
                                         {"color": "red", "value": None}, {"color": "orange", "value": _LOW_LEFT},
                                         {"color": "green", "value": _WARN_LEFT}]}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "value"},
        "gridPos": position,
    }


def _timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str,
                position: dict[str, int], threshold: float | None = None) -> dict[str, Any]:
    custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never"}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if threshold is not None:
        custom["thresholdsStyle"] = {"mode": "line"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                {"color": "red", "value": threshold}]}
    return {"type": "timeseries", "title": title, "description": description, "datasource": _PROMETHEUS,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "gridPos": position}


def dashboard(slos: Slos) -> dict[str, Any]:
    """The dashboard for the enabled objectives (Grafana's JSON model)."""
    enabled = slos.enabled()
    panels: list[dict[str, Any]] = []
    width = max(24 // max(len(enabled), 1), 4)
    for index, slo in enumerate(enabled):
        panels.append(_stat(slo, {"h": 6, "w": width, "x": (index * width) % 24, "y": (index * width) // 24 * 6}))
    top = (len(enabled) * width + 23) // 24 * 6
    refs = [chr(ord("A") + index) for index in range(len(enabled))]
    panels.append(_timeseries(
        "Error budget left", "Share of each objective's error budget not yet spent over its period.",
        [_target(budget_left_expr(slo), slo.name, ref) for slo, ref in zip(enabled, refs)], "percentunit",
        {"h": 8, "w": 24, "x": 0, "y": top}))
    fast = WINDOWS[0]
    factor = min((float(slo.factor(fast)) for slo in enabled), default=None)
    panels.append(_timeseries(
        f"Burn rate over {fast.long}", f"Errors over the last {fast.long} against the rate that spends the budget "
        f"exactly by the period's end (1). The fast alert pages above the red line (with the {fast.short} window too).",
        [_target(burn_rate_expr(slo, fast.long), slo.name, ref) for slo, ref in zip(enabled, refs)], "x",
        {"h": 8, "w": 24, "x": 0, "y": top + 8}, threshold=factor))
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": UID, "title": "SLO error budgets",
        "description": "Generated from alerts/slos.yaml by homelab.alerts.slo_dashboard: edit that file, not this dashboard.",
        "tags": ["homelab", "slo"], "editable": False, "schemaVersion": 39, "version": 1, "timezone": "browser",
        "refresh": "1m", "time": {"from": "now-7d", "to": "now"}, "templating": {"list": []},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


def dashboard_text(slos: Slos) -> str:
    return json.dumps(dashboard(slos), indent=2) + "\n"
