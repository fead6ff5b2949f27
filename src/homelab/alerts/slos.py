"""Service level objectives (alerts/slos.yaml) compiled into recording rules and burn-rate alerts.

Each SLO's error ratio (bad events / all events, by job) is recorded over the windows the alerts
read, as ``slo:error_ratio:rate<window>{slo="<Name>"}``, and over the whole period with the share
of the error budget left (``slo:error_budget_remaining:ratio``) for dashboards and `homelab status`.

The alerts are the SRE workbook's multi-window, multi-burn-rate ones (chapter 5, "Alerting on
SLOs"): a page when the budget burns at the rate that spends 2% of it in 1h, seen over 1h and
over 5m, or 5% of it in 6h, seen over 6h and over 30m. The short window makes an alert stop soon
after the errors do. Burn factors come from the period: 14.4 and 6 for 30 days.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import create_model, model_validator

from homelab.alerts.base import generated_yaml, num, series
from homelab.config import FieldError, StrictModel, load_yaml_model
from homelab.types import Duration, Percent, duration_text, seconds


class BurnWindow(NamedTuple):
    long: str
    short: str
    # The share of the whole period's error budget spent in `long` at the alerting burn rate.
    budget_spent: Decimal


WINDOWS = (BurnWindow("1h", "5m", Decimal("0.02")), BurnWindow("6h", "30m", Decimal("0.05")))
SEVERITY = "critical"  # the workbook pages on both pairs
# Series in the generated tests advance one step a minute; the windows are whole minutes.
TEST_STEP_S = 60
# Events per test step: large, so that a ratio just beside a threshold is not rounded away.
TEST_EVENTS_PER_STEP = 100000
GENERATED_GROUP = "slos"


# Recorded per objective (label slo): the share of its error budget left over its whole period.
BUDGET_LEFT = "slo:error_budget_remaining:ratio"


def recorded(window: str) -> str:
    """The recorded series of an objective's error ratio over ``window``."""
    return f"slo:error_ratio:rate{window}"


class Slo(StrictModel):
    """What every objective has: how much must go well, over how long."""

    name: ClassVar[str]
    job: ClassVar[str]
    title: ClassVar[str]  # "toy-redis availability"
    events: ClassVar[str]  # "toy-redis's commands"
    good: ClassVar[str]  # "answered without a server error", after "99.9% of <events> "

    enabled: bool = True
    objective_percent: Percent
    period: Duration

    @model_validator(mode="after")
    def _burn_rates_possible(self):
        if not seconds(self.period) >= max(seconds(window.long) for window in WINDOWS):
            raise FieldError("period", f"expected at least {WINDOWS[-1].long}, got {self.period!r}")
        for window in WINDOWS:
            if self.factor(window) <= 1:
                raise FieldError("period", f"expected a period long enough that spending {num(float(window.budget_spent * 100))}% of "
                                           f"the budget in {window.long} is a burn rate above 1, got {self.period!r}")
            if self.threshold(window) >= 1:
                raise FieldError("objective_percent", f"expected an objective whose {num(float(self.factor(window)))}x "
                                                      f"burn rate is an error ratio below 1, got {num(self.objective_percent)}")
        return self

    # --- what the subclasses say -------------------------------------------------------------

    def error_ratio(self, window: str) -> str:
        """PromQL: the share of bad events over ``window``, by job."""
        raise NotImplementedError

    def series_for(self, ratios: list[tuple[float, int]]) -> list[dict[str, str]]:
        """Test input series whose error ratio is each ``ratio`` for ``steps`` steps in turn."""
        raise NotImplementedError

    # --- derived ----------------------------------------------------------------------------

    @property
    def alert(self) -> str:
        return f"{self.name}ErrorBudgetBurn"

    @property
    def budget(self) -> Decimal:
        return (100 - Decimal(repr(self.objective_percent))) / 100

    def factor(self, window: BurnWindow) -> Decimal:
        return window.budget_spent * Decimal(seconds(self.period)) / Decimal(seconds(window.long))

    def threshold(self, window: BurnWindow) -> Decimal:
        """The error ratio at which ``window``'s pair alerts."""
        return self.factor(window) * self.budget

    def good_events(self) -> str:
        return self.good

    def labels(self) -> dict[str, str]:
        return {"job": self.job, "slo": self.name}

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        windows = sorted({w for pair in WINDOWS for w in (pair.long, pair.short)}, key=seconds)
        rules: list[dict[str, Any]] = [
            {"record": recorded(window), "expr": self.error_ratio(window), "labels": {"slo": self.name}}
            for window in [*windows, self.period]
        ]
        rules.append({"record": BUDGET_LEFT,
                      "expr": f"1 - {recorded(self.period)}{{slo=\"{self.name}\"}} / {decimal_text(self.budget)}",
                      "labels": {"slo": self.name}})
        for window in WINDOWS:
            limit = decimal_text(self.threshold(window))
            selector = f'{{slo="{self.name}"}}'
            rules.append({
                "alert": self.alert,
                "expr": f"{recorded(window.long)}{selector} > {limit} and {recorded(window.short)}{selector} > {limit}",
                "labels": {"severity": SEVERITY, "window": window.long},
                "annotations": self.annotations(window, runbook_base),
            })
        return rules

    def annotations(self, window: BurnWindow, runbook_base: str) -> dict[str, str]:
        factor = num(float(self.factor(window)))
        lasts = duration_text(seconds(self.period) / float(self.factor(window)))
        return {
            "summary": f"{self.title} is burning its error budget {factor}x too fast",
            "description": (f"Over both the last {window.long} and {window.short}, more than "
                            f"{_percent(self.threshold(window))}% of {self.events} failed (the objective: "
                            f"{num(self.objective_percent)}% of them {self.good_events()} over {self.period}). At this rate the "
                            f"whole budget is gone in {lasts}."),
            "runbook_url": f"{runbook_base}/{self.alert}.md",
        }

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        fast, slow = WINDOWS

        def fired(*windows: BurnWindow) -> list[dict[str, Any]]:
            return [{"exp_labels": {**self.labels(), "severity": SEVERITY, "window": window.long},
                     "exp_annotations": self.annotations(window, runbook_base)} for window in windows]

        def test(name: str, ratios: list[tuple[float, int]], checks: list[tuple[int, list]]) -> dict[str, Any]:
            return {"name": f"{self.alert}: {name}", "interval": f"{TEST_STEP_S}s",
                    "input_series": self.series_for(ratios),
                    "alert_rule_test": [{"eval_time": duration_text(minute * 60), "alertname": self.alert,
                                         "exp_alerts": expected} for minute, expected in checks]}

        # Under a ratio held from the start, every window shows that ratio once it holds two
        # samples, so checking soon after the longest short window fills is as good as after 6h
        # (and promtool runs minutes less).
        after_slow = int(seconds(slow.short) // 60) + 10
        span = after_slow + 5
        below_slow, above_slow = float(self.threshold(slow)) * 0.9, float(self.threshold(slow)) * 1.1
        below_fast, above_fast = float(self.threshold(fast)) * 0.9, float(self.threshold(fast)) * 1.1
        tests = [
            test(f"quiet at {_percent(below_slow)}% errors, below the {slow.long} pair's burn rate",
                 [(below_slow, span)], [(after_slow, [])]),
            test(f"{slow.long} pair fires at {_percent(above_slow)}% errors, the {fast.long} pair stays quiet",
                 [(above_slow, span)], [(after_slow, fired(slow))]),
            test(f"{fast.long} pair stays quiet at {_percent(below_fast)}% errors, below its burn rate",
                 [(below_fast, span)], [(after_slow, fired(slow))]),
            test(f"both pairs fire at {_percent(above_fast)}% errors",
                 [(above_fast, span)], [(after_slow, fired(fast, slow))]),
        ]
        # Errors at twice the fast burn rate for 65m, then none: within the short window the fast
        # alert stops, though its long window still holds more than the burn rate's worth.
        burst = float(self.threshold(fast)) * 2
        short_minutes = int(seconds(fast.short) // 60)
        if burst < 1:
            tests.append(test(f"{fast.long} pair stops within {fast.short} of the errors stopping",
                              [(burst, 65), (0.0, 2 * short_minutes)],
                              [(65, fired(fast, slow)), (65 + short_minutes + 1, fired(slow))]))
        return tests


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _percent(ratio: float | Decimal) -> str:
    return f"{float(ratio) * 100:.4g}"


def _counter(per_step: list[tuple[float, int]]) -> str:
    """promtool series text: a counter from 0 increasing by ``increase`` a step for ``steps`` steps, in turn."""
    parts, value = [], 0.0
    for increase, steps in per_step:
        # A segment "a+bxn" is n+1 samples; the later ones start one step on from the last sample.
        start, count = (value, steps) if not parts else (value + increase, steps - 1)
        parts.append(f"{num(start)}+{num(increase)}x{count}")
        value = start + increase * count
    return " ".join(parts)


def _split(ratios: list[tuple[float, int]]) -> tuple[str, str]:
    """(bad events, all events) counters for error ratios held in turn."""
    bad = [(round(ratio * TEST_EVENTS_PER_STEP, 6), steps) for ratio, steps in ratios]
    return _counter(bad), _counter([(TEST_EVENTS_PER_STEP, steps) for _, steps in ratios])


# --- the objectives -----------------------------------------------------------------------------


class ToyRedisAvailability(Slo):
    """Commands toy-redis refuses for its own reasons (out of memory, an internal error) are bad."""

    name = "ToyRedisAvailability"
    job = "toy-redis"
    title = "toy-redis availability"
    events = "toy-redis's commands"
    good = "answered without a server error"
    # toy_redis_errors_total kinds that are the server's fault, not the client's (src/toy_redis/server.py).
    server_faults: ClassVar[tuple[str, ...]] = ("oom", "internal")

    def error_ratio(self, window: str) -> str:
        total = f'sum by (job) (rate(toy_redis_commands_total{{job="{self.job}"}}[{window}]))'
        kinds = "|".join(self.server_faults)
        bad = f'sum by (job) (rate(toy_redis_errors_total{{job="{self.job}",kind=~"{kinds}"}}[{window}]))'
        # No such error yet means no series at all: count it as none rather than leave no ratio.
        return f"({bad} or {total} * 0) / {total}"

    def series_for(self, ratios):
        bad, total = _split(ratios)
        return [series("toy_redis_commands_total", {"job": self.job, "instance": "worker-node-12", "command": "get"}, total),
                series("toy_redis_errors_total", {"job": self.job, "instance": "worker-node-12", "kind": "oom"}, bad)]


class ToyRedisLatency(Slo):
    """Commands slower than threshold_ms are bad; the threshold is one of the histogram's bounds."""

    name = "ToyRedisLatency"
    job = "toy-redis"
    title = "toy-redis latency"
    events = "toy-redis's commands"
    good = "answered within threshold_ms"

    threshold_ms: float

    @model_validator(mode="after")
    def _a_bucket_bound(self):
        bounds = [bound * 1000 for bound in _latency_buckets()]
        if self.threshold_ms not in bounds:
            raise FieldError("threshold_ms", "expected one of toy-redis's latency bucket bounds (ms): "
                                             f"{', '.join(num(bound) for bound in bounds)}; got {num(self.threshold_ms)}")
        return self

    @property
    def le(self) -> str:
        # The label value toy-redis writes: repr() of the bound in seconds (toy_redis.metrics).
        return next(repr(bound) for bound in _latency_buckets() if bound * 1000 == self.threshold_ms)

    def good_events(self) -> str:
        return f"answered within {num(self.threshold_ms)} ms"

    def error_ratio(self, window: str) -> str:
        metric = "toy_redis_command_duration_seconds"
        fast = f'sum by (job) (rate({metric}_bucket{{job="{self.job}",le="{self.le}"}}[{window}]))'
        total = f'sum by (job) (rate({metric}_count{{job="{self.job}"}}[{window}]))'
        return f"1 - {fast} / {total}"

    def series_for(self, ratios):
        bad, total = _split(ratios)
        labels = {"job": self.job, "instance": "worker-node-12", "command": "get"}
        good = _counter([(TEST_EVENTS_PER_STEP - round(ratio * TEST_EVENTS_PER_STEP, 6), steps)
                         for ratio, steps in ratios])
        return [series("toy_redis_command_duration_seconds_bucket", {**labels, "le": self.le}, good),
                series("toy_redis_command_duration_seconds_count", labels, total)]


class NginxAvailability(Slo):
    """Responses of the nginx site with a 5xx status are bad."""

    name = "NginxAvailability"
    job = "mtail"
    title = "the nginx site's availability"
    events = "the nginx site's responses"
    good = "not server errors (5xx)"

    def error_ratio(self, window: str) -> str:
        def rate(selector: str) -> str:
            return f'sum by (job) (rate(nginx_http_responses_total{{job="{self.job}"{selector}}}[{window}]))'

        server_errors, responses = rate(',code_class="5xx"'), rate("")
        return f"({server_errors} or {responses} * 0) / {responses}"

    def series_for(self, ratios):
        bad, total = _split(ratios)
        ok = _counter([(TEST_EVENTS_PER_STEP - round(ratio * TEST_EVENTS_PER_STEP, 6), steps) for ratio, steps in ratios])
        labels = {"job": self.job, "instance": "master-node"}
        return [series("nginx_http_responses_total", {**labels, "code_class": "2xx"}, ok),
                series("nginx_http_responses_total", {**labels, "code_class": "5xx"}, bad)]


CATALOG: tuple[type[Slo], ...] = (ToyRedisAvailability, ToyRedisLatency, NginxAvailability)


def _latency_buckets() -> tuple[float, ...]:
    from toy_redis.metrics import LATENCY_BUCKETS

    return LATENCY_BUCKETS


Objectives = create_model("Objectives", __base__=StrictModel, **{slo.name: (slo, ...) for slo in CATALOG})


class Slos(StrictModel):
    slos: Objectives  # type: ignore[valid-type]

    def enabled(self) -> list[Slo]:
        objectives = (getattr(self.slos, slo.name) for slo in CATALOG)
        return [slo for slo in objectives if slo.enabled]


def load_slos(path: Path) -> Slos:
    """The validated SLO file; any mistake is one ConfigError line naming file and key."""
    from homelab.alerts.render import shown_path

    return load_yaml_model(shown_path(Path(path)), Slos)


def slo_files(slos: Slos, runbook_base: str, header: str) -> dict[str, str]:
    """alerts/generated/slos.rules.yml and its promtool tests, when any objective is enabled."""
    enabled = slos.enabled()
    if not enabled:
        return {}

    def dump(data: object) -> str:
        return header + generated_yaml(data)

    rules = [rule for slo in enabled for rule in slo.rules(runbook_base)]
    return {
        f"{GENERATED_GROUP}.rules.yml": dump({"groups": [{"name": GENERATED_GROUP, "rules": rules}]}),
        f"tests/{GENERATED_GROUP}.test.yml": dump({
            "rule_files": [f"../{GENERATED_GROUP}.rules.yml"],
            "evaluation_interval": f"{TEST_STEP_S}s",
            "tests": [test for slo in enabled for test in slo.tests(runbook_base)],
        }),
    }
