"""What every alert in the catalog shares: its common keys, and rules and promtool tests built from levels.

An alert's rule compares a *value expression* (PromQL giving the measured value in the unit the
user edits, e.g. percent or ms) with each level's threshold. Its promtool tests feed series that
make the value expression equal a chosen number, so the same number predicts both which levels
fire and the text of the description.
"""

from __future__ import annotations

import math
from decimal import Decimal
from string import Template
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import yaml
from pydantic import AfterValidator, Field, model_validator

from homelab.config import FieldError, StrictModel
from homelab.types import Duration, duration_text, seconds

# promtool's unit tests step the rules this often; short enough for any sensible `for:`.
def generated_yaml(data: object) -> str:
    """A generated rule or test file's YAML. libyaml's emitter (PyYAML's C dumper, in its wheels
    and in Debian's python3-yaml) writes the same text as the pure-Python one five times faster:
    every deploy renders all rule files to compare them with the committed ones."""
    return yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, width=1000, allow_unicode=True)


TEST_INTERVAL_S = 15

# rate(), deriv() and predict_linear() need at least two scrapes inside the window, or the alert
# silently never fires; a minute holds several at any usual scrape interval.
MIN_WINDOW_S = 60


def _check_window(value: str) -> str:
    if seconds(value) < MIN_WINDOW_S:
        raise ValueError("expected a window of at least 1m, so that it holds several scrapes")
    return value


# A Duration of at least MIN_WINDOW_S.
Window = Annotated[Duration, AfterValidator(_check_window)]
Severity = Literal["warning", "critical"]


def num(value: float) -> str:
    """A threshold as written in PromQL and in text: 60 not 60.0, never exponent notation."""
    if value == int(value):
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def constant(value: float, samples: int) -> str:
    return f"{num(value)}x{samples}"


def linear(start: float, step: float, samples: int) -> str:
    sign = "+" if step >= 0 else "-"
    return f"{num(start)}{sign}{num(abs(step))}x{samples}"


class Level(NamedTuple):
    severity: str
    threshold: float


class Alert(StrictModel):
    """Keys every alert has: `enabled` and `for` (how long the condition must hold before firing)."""

    name: ClassVar[str]
    # The rule file (alerts/generated/<group>.rules.yml) the alert goes into.
    group: ClassVar[str]
    # Labels of the alert's result series in the tests, besides alertname and severity.
    test_labels: ClassVar[dict[str, str]] = {"instance": "node-a", "job": "node"}
    summary: ClassVar[str]

    enabled: bool = True
    for_: Duration = Field(alias="for")

    def description(self, level: Level) -> str:
        raise NotImplementedError

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    # --- shared by the subclasses -------------------------------------------------------------

    def _rule(self, expr: str, level: Level, runbook_base: str, value_format: str | None) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": expr,
            "for": self.for_,
            "labels": {"severity": level.severity},
            "annotations": self._annotations(level, runbook_base, _prometheus_fields(value_format)),
        }

    def _annotations(self, level: Level, runbook_base: str, fields: dict[str, str]) -> dict[str, str]:
        return {
            "summary": Template(self.summary).substitute(fields),
            "description": Template(self.description(level)).substitute(fields),
            "runbook_url": f"{runbook_base}/{self.name}.md",
        }

    def _expected(self, level: Level, runbook_base: str, value_text: str = "") -> dict[str, Any]:
        fields = {**self.test_labels, "value": value_text}
        return {
            "exp_labels": {**self.test_labels, "severity": level.severity},
            "exp_annotations": self._annotations(level, runbook_base, fields),
        }

    def _timing(self) -> tuple[int | None, int, int]:
        """(eval time where the rule is still pending or None, eval time where it fires, samples).

        Conditions computed over a range may first hold one or two steps after the series start,
        so the firing check comes two steps after `for:` has run out.
        """
        steps_for = math.ceil(seconds(self.for_) / TEST_INTERVAL_S)
        pending = (steps_for - 1) * TEST_INTERVAL_S if steps_for >= 1 else None
        firing = (steps_for + 2) * TEST_INTERVAL_S
        return pending, firing, steps_for + 4


def _prometheus_fields(value_format: str | None) -> dict[str, str]:
    class LabelRefs(dict):
        def __missing__(self, key: str) -> str:
            return "{{ $labels.%s }}" % key

    fields = LabelRefs()
    if value_format:
        fields["value"] = '{{ printf "%s" $value }}' % value_format
    return fields


class BinaryAlert(Alert):
    """An alert on a condition that holds or not (a target down, a probe failing)."""

    severity: Severity
    expr: ClassVar[str]

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        return [self._rule(self.expr, Level(self.severity, 0), runbook_base, None)]

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        raise NotImplementedError

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        raise NotImplementedError

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        pending, firing, samples = self._timing()
        level = Level(self.severity, 0)
        checks = [] if pending is None else [_check(pending, self.name, [])]
        return [
            {
                "name": f"{self.name} fires after {self.for_}",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": self.failing_series(samples),
                "alert_rule_test": [*checks, _check(firing, self.name, [self._expected(level, runbook_base)])],
            },
            {
                "name": f"{self.name} stays silent when healthy",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": self.healthy_series(samples),
                "alert_rule_test": [_check(firing, self.name, [])],
            },
        ]


class ThresholdAlert(Alert):
    """An alert on a measured value above one or more thresholds (warning below critical)."""

    value_format: ClassVar[str] = "%.1f"
    # The largest value the measurement can take (100 for a percent), if any.
    value_ceiling: ClassVar[float | None] = None

    def value_expr(self) -> str:
        raise NotImplementedError

    def levels(self) -> list[Level]:
        raise NotImplementedError

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        """Input series over which value_expr() evaluates to ``value``."""
        raise NotImplementedError

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        return [
            self._rule(f"{self.value_expr()} > {num(level.threshold)}", level, runbook_base, self.value_format)
            for level in self.levels()
        ]

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        pending, firing, samples = self._timing()
        levels = self.levels()
        lowest = levels[0].threshold
        below = self._stable_value(0, lowest) if lowest > 0 else 0.0
        tests = [{
            "name": f"{self.name} stays silent at {num(below)}, not above {num(lowest)}",
            "interval": f"{TEST_INTERVAL_S}s",
            "input_series": self.series_for(below, samples),
            "alert_rule_test": [_check(firing, self.name, [])],
        }]
        for index, level in enumerate(levels):
            upper = levels[index + 1].threshold if index + 1 < len(levels) else self._beyond(level.threshold)
            value = self._stable_value(level.threshold, upper)
            firing_levels = levels[: index + 1]
            expected = [self._expected(fired, runbook_base, self.value_format % value) for fired in firing_levels]
            checks = [] if pending is None else [_check(pending, self.name, [])]
            tests.append({
                "name": f"{self.name} {level.severity} fires at {num(value)}, above {num(level.threshold)}, after {self.for_}",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": self.series_for(value, samples),
                "alert_rule_test": [*checks, _check(firing, self.name, expected)],
            })
        return tests

    def _beyond(self, threshold: float) -> float:
        if self.value_ceiling is not None:
            return self.value_ceiling
        return threshold * 2 if threshold > 0 else 2

    def _stable_value(self, low: float, high: float) -> float:
        """A value strictly between low and high whose printed form no float rounding can change."""
        for fraction in (0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75, 0.45, 0.55):
            value = low + (high - low) * fraction
            if value in (low, high):
                continue
            shown = {self.value_format % (value * factor) for factor in (1 - 1e-9, 1, 1 + 1e-9)}
            if len(shown) == 1:
                return round(value, 12) if low < round(value, 12) < high else value
        raise ValueError(f"{self.name}: no test value between {low} and {high}")


class WarningCritical(ThresholdAlert):
    """Two levels; the subclass names its threshold keys (e.g. warning_percent, critical_percent)."""

    warning_key: ClassVar[str]
    critical_key: ClassVar[str]

    def levels(self) -> list[Level]:
        return [Level("warning", getattr(self, self.warning_key)), Level("critical", getattr(self, self.critical_key))]

    @model_validator(mode="after")
    def _warning_below_critical(self):
        warning, critical = getattr(self, self.warning_key), getattr(self, self.critical_key)
        if not warning < critical:
            raise FieldError(self.warning_key, f"expected below {self.critical_key} ({num(critical)}), got {num(warning)}")
        return self


def _check(at_seconds: int, alertname: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_time": duration_text(at_seconds), "alertname": alertname, "exp_alerts": expected}
