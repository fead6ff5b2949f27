"""Every alert: the keys it reads from alerts/thresholds.yaml, its PromQL, and its test input.

Runbooks live in docs/runbooks/<name>.md. Metric names come from node_exporter, blackbox_exporter,
mtail's nginx program (templates/nginx/responses.mtail.j2), toy-redis and the alert relay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import model_validator

from homelab.config import FieldError
from homelab.types import Duration, Percent, Positive, duration_text, seconds
from homelab.alerts.base import (
    TEST_INTERVAL_S,
    Alert,
    BinaryAlert,
    Level,
    Severity,
    ThresholdAlert,
    WarningCritical,
    Window,
    constant,
    linear,
    num,
    series,
    _check,
)

MIB = 1048576

# The blackbox job checking every secured listener (homelab.topology.Topology.tls_checks) with two
# probes, told apart by label `check`: CHECK_LOGIN fetches what Prometheus scrapes over https with
# the cluster CA and blackbox's login; CHECK_PORT only opens a TCP connection.
TLS_CHECK_JOB = "tls-check"
CHECK_LOGIN = "login"
CHECK_PORT = "port"

# Jobs InstanceDown leaves out so one outage pages once: those with their own "down" alert, and
# the TLS checks (their `up` is blackbox's; a listener down is its own job's InstanceDown).
JOBS_WITH_OWN_DOWN_ALERT = ("toy-redis", "alert-relay", TLS_CHECK_JOB)


# --- every node ---------------------------------------------------------------------------------


class InstanceDown(BinaryAlert):
    name = "InstanceDown"
    group = "node"
    expr = f'up{{job!~"{"|".join(JOBS_WITH_OWN_DOWN_ALERT)}"}} == 0'
    summary = "$instance ($job) is down"

    def description(self, level: Level) -> str:
        return f"Prometheus has not been able to scrape job $job at $instance for {self.for_}."

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("up", self.test_labels, constant(0, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        # toy-redis being down is ToyRedisDown's to report, not this alert's.
        return [
            series("up", self.test_labels, constant(1, samples)),
            series("up", {"instance": "worker-node-12", "job": "toy-redis"}, constant(0, samples)),
        ]


class HostMemoryHigh(WarningCritical):
    name = "HostMemoryHigh"
    group = "node"
    warning_key, critical_key = "warning_percent", "critical_percent"
    value_ceiling = 100
    summary = "Memory use high on $instance"

    warning_percent: Percent
    critical_percent: Percent

    def value_expr(self) -> str:
        return "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"

    def description(self, level: Level) -> str:
        return (f"$instance has had $value% of its memory in use for {self.for_} "
                f"({level.severity} above {num(level.threshold)}%).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        total = 8_000_000_000
        return [
            series("node_memory_MemTotal_bytes", self.test_labels, constant(total, samples)),
            series("node_memory_MemAvailable_bytes", self.test_labels, constant(total * (1 - value / 100), samples)),
        ]


class HostLoadHigh(WarningCritical):
    name = "HostLoadHigh"
    group = "node"
    warning_key, critical_key = "warning_per_core", "critical_per_core"
    value_format = "%.2f"
    summary = "Load high on $instance"

    warning_per_core: Positive
    critical_per_core: Positive

    def value_expr(self) -> str:
        return 'node_load5 / count without (cpu, mode) (node_cpu_seconds_total{mode="idle"})'

    def description(self, level: Level) -> str:
        return (f"$instance has had a 5-minute load average of $value per core for {self.for_} "
                f"({level.severity} above {num(level.threshold)} per core).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        cpus = 2
        idle = [
            series("node_cpu_seconds_total", {**self.test_labels, "cpu": str(cpu), "mode": "idle"}, linear(0, 10, samples))
            for cpu in range(cpus)
        ]
        return [*idle, series("node_load5", self.test_labels, constant(value * cpus, samples))]


class HostDiskFillingUp(Alert):
    """Fires when the last `window` of a filesystem's free space, extrapolated, reaches zero
    within warning_hours (warning) or critical_hours (critical), and less than
    free_percent_below percent is free now (a nearly empty disk filling is not urgent)."""

    name = "HostDiskFillingUp"
    group = "node"
    test_labels = {"device": "/dev/sda1", "fstype": "ext4", "instance": "node-a", "job": "node", "mountpoint": "/"}
    summary = "$mountpoint on $instance is filling up"

    window: Window
    warning_hours: Positive
    critical_hours: Positive
    free_percent_below: Percent

    @model_validator(mode="after")
    def _warning_horizon_longer(self):
        if not self.warning_hours > self.critical_hours:
            raise FieldError("warning_hours", f"expected above critical_hours ({num(self.critical_hours)}), got {num(self.warning_hours)}")
        return self

    def levels(self) -> list[Level]:
        return [Level("warning", self.warning_hours), Level("critical", self.critical_hours)]

    def description(self, level: Level) -> str:
        return (f"At the rate of the last {self.window}, $mountpoint ($device) on $instance will be full "
                f"within {num(level.threshold)}h; less than {num(self.free_percent_below)}% of it is free.")

    def expr(self, hours: float) -> str:
        avail = 'node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs|nsfs"}'
        return (
            f"{avail} / node_filesystem_size_bytes * 100 < {num(self.free_percent_below)}"
            f" and predict_linear({avail}[{self.window}], {num(hours)} * 3600) < 0"
            " and node_filesystem_readonly == 0"
        )

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        return [self._rule(self.expr(level.threshold), level, runbook_base, None) for level in self.levels()]

    def _disk(self, hours_left: float, samples: int, free_percent: float) -> list[dict[str, str]]:
        """A disk with free_percent free that, falling steadily, is empty after hours_left."""
        size = 100_000_000_000
        avail = size * free_percent / 100
        per_step = avail / (hours_left * 3600) * TEST_INTERVAL_S
        return [
            series("node_filesystem_size_bytes", self.test_labels, constant(size, samples)),
            series("node_filesystem_readonly", self.test_labels, constant(0, samples)),
            series("node_filesystem_avail_bytes", self.test_labels, linear(avail, -per_step, samples)),
        ]

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        pending, firing, samples = self._timing()
        warning, critical = self.levels()
        elapsed_h = samples * TEST_INTERVAL_S / 3600
        low_free = self.free_percent_below / 2
        checks = [] if pending is None else [_check(pending, self.name, [])]
        expected_warning = self._expected(warning, runbook_base)
        expected_critical = self._expected(critical, runbook_base)

        def case(name: str, hours_left: float, free: float, alerts: list, with_pending: bool = True):
            return {
                "name": f"{self.name}: {name}",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": self._disk(hours_left, samples, free),
                "alert_rule_test": [*(checks if with_pending else []), _check(firing, self.name, alerts)],
            }

        tests = [
            case(f"silent when full only after {num(warning.threshold * 2)}h", warning.threshold * 2 + elapsed_h,
                 low_free, [], with_pending=False),
            case(f"both fire when full within {num(critical.threshold / 2)}h, after {self.for_}",
                 critical.threshold / 2, low_free, [expected_warning, expected_critical]),
        ]
        # A disk emptying fast but with more than free_percent_below free: silent. Possible only
        # if, falling that fast, it stays above free_percent_below for the whole test.
        high_free, fast = self.free_percent_below + (100 - self.free_percent_below) * 0.9, critical.threshold * 0.9
        if high_free * (1 - elapsed_h / fast) > self.free_percent_below:
            tests.insert(1, case(f"silent with {num(self.free_percent_below)}% or more free", fast,
                                 high_free, [], with_pending=False))
        # While the test runs the time left shrinks by elapsed_h: only with room between the two
        # horizons can a disk sit inside the warning one and outside the critical one throughout.
        if warning.threshold - critical.threshold > elapsed_h:
            between = critical.threshold + elapsed_h + (warning.threshold - critical.threshold - elapsed_h) / 2
            tests.insert(-1, case(f"warning fires when full within {num(round(between, 2))}h, after {self.for_}",
                                 between, low_free, [expected_warning]))
        return tests


# --- HTTP probes (blackbox_exporter) ------------------------------------------------------------

# The health probes' alerts leave the TLS checks out: those are ScrapeTLSOrLoginFailing's, and a
# listener that is down is InstanceDown's.
HEALTH_PROBES = f'job!="{TLS_CHECK_JOB}"'


class ProbeFailed(BinaryAlert):
    name = "ProbeFailed"
    group = "blackbox"
    test_labels = {"instance": "http://master-node/", "job": "blackbox"}
    expr = f"probe_success{{{HEALTH_PROBES}}} == 0"
    summary = "Probe of $instance is failing"

    def description(self, level: Level) -> str:
        return f"blackbox_exporter's probe of $instance has failed for {self.for_}."

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("probe_success", self.test_labels, constant(0, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        tls_check = {"check": CHECK_PORT, "instance": "worker-node-12:<port>", "job": TLS_CHECK_JOB}
        return [series("probe_success", self.test_labels, constant(1, samples)),
                series("probe_success", tls_check, constant(0, samples))]


class ProbeSlow(WarningCritical):
    """The average probe duration over `window`: at a 15 s probe interval, 25m is the last 100 probes."""

    name = "ProbeSlow"
    group = "blackbox"
    warning_key, critical_key = "warning_ms", "critical_ms"
    test_labels = {"instance": "http://master-node/", "job": "blackbox"}
    value_format = "%.0f"
    summary = "Probe of $instance is slow"

    window: Window
    warning_ms: Positive
    critical_ms: Positive

    def value_expr(self) -> str:
        return f"avg_over_time(probe_duration_seconds{{{HEALTH_PROBES}}}[{self.window}]) * 1000"

    def description(self, level: Level) -> str:
        return (f"Probes of $instance took $value ms on average over the last {self.window}, for {self.for_} "
                f"({level.severity} above {num(level.threshold)} ms).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        return [series("probe_duration_seconds", self.test_labels, constant(value / 1000, samples))]


# --- toy-redis ----------------------------------------------------------------------------------

TOY_REDIS = {"instance": "worker-node-12", "job": "toy-redis"}


class ToyRedisDown(BinaryAlert):
    name = "ToyRedisDown"
    group = "toy-redis"
    test_labels = TOY_REDIS
    expr = 'up{job="toy-redis"} == 0'
    summary = "toy-redis on $instance is down"

    def description(self, level: Level) -> str:
        return f"Prometheus has not been able to scrape toy-redis's metrics at $instance for {self.for_}."

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("up", self.test_labels, constant(0, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        return [series("up", self.test_labels, constant(1, samples))]


class ToyRedisLatencyHigh(WarningCritical):
    name = "ToyRedisLatencyHigh"
    group = "toy-redis"
    warning_key, critical_key = "warning_ms", "critical_ms"
    test_labels = TOY_REDIS
    value_format = "%.2f"
    summary = "toy-redis on $instance answers slowly"
    quantile: ClassVar[float] = 0.99

    window: Window
    warning_ms: Positive
    critical_ms: Positive

    def value_expr(self) -> str:
        return (f"histogram_quantile({self.quantile}, sum by (instance, job, le) "
                f'(rate(toy_redis_command_duration_seconds_bucket{{job="toy-redis"}}[{self.window}]))) * 1000')

    def description(self, level: Level) -> str:
        return (f"The 99th percentile of toy-redis command latency on $instance over {self.window} "
                f"has been $value ms for {self.for_} ({level.severity} above {num(level.threshold)} ms).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        # Every command lands in one bucket from 0 to `upper`; the quantile interpolates to
        # quantile * upper, which is chosen to be `value` ms.
        upper = value / 1000 / self.quantile
        labels = {**self.test_labels, "command": "get"}
        return [
            series("toy_redis_command_duration_seconds_bucket", {**labels, "le": num(upper)}, linear(0, 60, samples)),
            series("toy_redis_command_duration_seconds_bucket", {**labels, "le": "+Inf"}, linear(0, 60, samples)),
        ]


class ToyRedisMemoryGrowing(ThresholdAlert):
    """A leak shows as resident memory growing steadily; `window` must be long enough to
    smooth out normal allocation swings."""

    name = "ToyRedisMemoryGrowing"
    group = "toy-redis"
    test_labels = TOY_REDIS
    summary = "toy-redis memory on $instance keeps growing"

    window: Window
    mib_per_hour: Positive
    severity: Severity

    def levels(self) -> list[Level]:
        return [Level(self.severity, self.mib_per_hour)]

    def value_expr(self) -> str:
        return f'deriv(process_resident_memory_bytes{{job="toy-redis"}}[{self.window}]) * 3600 / {MIB}'

    def description(self, level: Level) -> str:
        return (f"toy-redis's resident memory on $instance has grown by $value MiB/h over the last {self.window} "
                f"for {self.for_} (above {num(level.threshold)} MiB/h): a leak, or data growing without bound.")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        per_step = value * MIB / 3600 * TEST_INTERVAL_S
        return [series("process_resident_memory_bytes", self.test_labels, linear(50 * MIB, per_step, samples))]


class ToyRedisExpiredKeysNotReclaimed(ThresholdAlert):
    name = "ToyRedisExpiredKeysNotReclaimed"
    group = "toy-redis"
    test_labels = TOY_REDIS
    value_ceiling = 100
    summary = "toy-redis on $instance keeps expired keys"

    stale_percent: Percent
    severity: Severity

    def levels(self) -> list[Level]:
        return [Level(self.severity, self.stale_percent)]

    def value_expr(self) -> str:
        return "100 * toy_redis_expired_stale_ratio"

    def description(self, level: Level) -> str:
        return (f"$value% of toy-redis's keys with a TTL on $instance have expired but still hold memory, "
                f"for {self.for_} (above {num(level.threshold)}%).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        return [series("toy_redis_expired_stale_ratio", self.test_labels, constant(value / 100, samples))]


# --- nginx (mtail counts responses by status class) ---------------------------------------------


class Nginx5xxRatioHigh(WarningCritical):
    name = "Nginx5xxRatioHigh"
    group = "nginx"
    warning_key, critical_key = "warning_percent", "critical_percent"
    test_labels = {"instance": "master-node", "job": "mtail"}
    value_ceiling = 100
    summary = "nginx on $instance answers with server errors"

    window: Window
    warning_percent: Percent
    critical_percent: Percent

    def value_expr(self) -> str:
        def rate(selector: str) -> str:
            return f"sum by (instance, job) (rate(nginx_http_responses_total{selector}[{self.window}]))"

        server_errors = rate('{code_class="5xx"}')
        return f"100 * {server_errors} / {rate('')}"

    def description(self, level: Level) -> str:
        return (f"$value% of nginx's responses on $instance over the last {self.window} were 5xx, "
                f"for {self.for_} ({level.severity} above {num(level.threshold)}%).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        def responses(code_class: str, per_step: float) -> dict[str, str]:
            return series("nginx_http_responses_total", {**self.test_labels, "code_class": code_class},
                          linear(0, per_step, samples))

        return [responses("2xx", 100 - value), responses("5xx", value)]


# --- the alert relay ----------------------------------------------------------------------------

ALERT_RELAY = {"instance": "worker-node-14", "job": "alert-relay"}


class AlertRelayDown(BinaryAlert):
    name = "AlertRelayDown"
    group = "alert-relay"
    test_labels = ALERT_RELAY
    expr = 'up{job="alert-relay"} == 0'
    summary = "The alert relay on $instance is down"

    def description(self, level: Level) -> str:
        return (f"Prometheus has not been able to scrape the alert relay at $instance for {self.for_}: "
                "alerts and faxes are not reaching Slack.")

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("up", self.test_labels, constant(0, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        return [series("up", self.test_labels, constant(1, samples))]


class AlertRelayDeadLetters(ThresholdAlert):
    name = "AlertRelayDeadLetters"
    group = "alert-relay"
    test_labels = ALERT_RELAY
    value_format = "%.0f"
    summary = "The alert relay on $instance gave up on messages"

    severity: Severity

    def levels(self) -> list[Level]:
        return [Level(self.severity, 0)]

    def value_expr(self) -> str:
        return "alert_relay_dead_letters"

    def description(self, level: Level) -> str:
        return (f"$value alerts or faxes on $instance could not be delivered after all retries "
                f"(dead letters), for {self.for_}.")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        return [series("alert_relay_dead_letters", self.test_labels, constant(value, samples))]


class AlertRelayCannotAuthenticate(BinaryAlert):
    name = "AlertRelayCannotAuthenticate"
    group = "alert-relay"
    test_labels = {**ALERT_RELAY, "service": "slack"}
    expr = "alert_relay_delivery_paused == 1"
    summary = "The alert relay on $instance cannot authenticate to $service"

    def description(self, level: Level) -> str:
        return ("$service has refused the relay's token or its scopes for "
                f"{self.for_}: delivery through it is paused (nothing is dropped) until the token works again.")

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("alert_relay_delivery_paused", self.test_labels, constant(1, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        return [series("alert_relay_delivery_paused", self.test_labels, constant(0, samples))]


# --- the node firewall (roles/firewall writes its drop counters for node_exporter) --------------

# roles/firewall's metric, named here so the catalog stays importable without the roles.
FIREWALL_DROPS = "homelab_firewall_dropped_packets_total"


class FirewallDropsOnServicePort(ThresholdAlert):
    """Packets to a service port the firewall dropped: from a host the topology does not list as
    a caller (reason not_allowed), or beyond a caller's per-source limits (reason flood). Drops to
    ports no service listens on (service="") are background noise and left out."""

    name = "FirewallDropsOnServicePort"
    group = "firewall"
    # A sample series: any host and port do (the rule does not read them).
    test_labels = {"instance": "worker-node-12", "job": "node", "service": "toy_redis", "listener": "resp",
                   "port": "<port>", "reason": "not_allowed"}
    value_format = "%.2f"
    summary = "The firewall on $instance drops packets to $service"

    window: Window
    packets_per_second: Positive
    severity: Severity

    def levels(self) -> list[Level]:
        return [Level(self.severity, self.packets_per_second)]

    def value_expr(self) -> str:
        return (f'sum by (instance, job, service, listener, port, reason) '
                f'(rate({FIREWALL_DROPS}{{service!=""}}[{self.window}]))')

    def description(self, level: Level) -> str:
        return (f"The firewall on $instance has dropped $value packets/s to $service "
                f"($listener, port $port; reason $reason) over the last {self.window}, "
                f"for {self.for_} (above {num(level.threshold)}/s).")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        return [series(FIREWALL_DROPS, self.test_labels, linear(0, value * TEST_INTERVAL_S, samples))]

    def _timing(self) -> tuple[int | None, int, int]:
        # rate() over a window reaching back before the series began reads low (it extrapolates
        # only half a step beyond the first sample), so the condition may first hold up to one
        # window in: the firing check moves one window later (the pending one holds either way).
        pending, firing, samples = super()._timing()
        lead = math.ceil(seconds(self.window) / TEST_INTERVAL_S)
        return pending, firing + lead * TEST_INTERVAL_S, samples + lead


# --- backups (homelab.backup.report: the control machine's metrics file on node_exporter) ---------

# A sample series: the rules read no label (the first Prometheus host's node_exporter carries it).
BACKUP_REPORT = {"instance": "worker-node-14", "job": "node"}


class BackupFailed(BinaryAlert):
    name = "BackupFailed"
    group = "backup"
    test_labels = BACKUP_REPORT
    expr = "homelab_backup_last_failed == 1"
    summary = "The last homelab backup failed"

    def description(self, level: Level) -> str:
        return ("The last `homelab backup` run from the control machine failed (reported through $instance's "
                f"node_exporter), and no run has succeeded since, for {self.for_}.")

    def failing_series(self, samples: int) -> list[dict[str, str]]:
        return [series("homelab_backup_last_failed", self.test_labels, constant(1, samples))]

    def healthy_series(self, samples: int) -> list[dict[str, str]]:
        return [series("homelab_backup_last_failed", self.test_labels, constant(0, samples))]


class BackupStale(WarningCritical):
    name = "BackupStale"
    group = "backup"
    test_labels = BACKUP_REPORT
    warning_key, critical_key = "warning_hours", "critical_hours"
    summary = "No homelab backup has succeeded for a while"

    warning_hours: Positive
    critical_hours: Positive

    def value_expr(self) -> str:
        return "(time() - homelab_backup_last_success_timestamp_seconds) / 3600"

    def description(self, level: Level) -> str:
        return (f"The newest finished backup is $value hours old ({level.severity} above {num(level.threshold)} "
                "hours): backups fail, or the control machine no longer runs them.")

    def series_for(self, value: float, samples: int) -> list[dict[str, str]]:
        # The timestamp keeps pace with time(), so the age stays at `value` at every evaluation.
        return [series("homelab_backup_last_success_timestamp_seconds", self.test_labels,
                       linear(-value * 3600, TEST_INTERVAL_S, samples))]


# --- TLS (roles/pki's certificates; blackbox's checks of every secured listener) ----------------

# roles/pki's metrics in node_exporter's textfile directory, named here so the catalog stays
# importable without the roles (roles/pki writes them under these names).
CERT_EXPIRY = "homelab_tls_cert_expiry_timestamp_seconds"
CERT_ROTATION_MARGIN = "homelab_tls_cert_rotation_margin_seconds"
DAY_S = 86400


class CertificateExpiringSoon(Alert):
    """A node's certificate inside pki.rotation_margin of expiry: the deploy that would have
    replaced it has not run. The margin is the one roles/pki rotates at (it writes it beside the
    expiry), so the alert and the rotation cannot disagree."""

    name = "CertificateExpiringSoon"
    group = "tls"
    test_labels = {"file": "/etc/homelab/tls/node.crt", "instance": "worker-node-12", "job": "node"}
    summary = "The TLS certificate of $instance expires in $value days"
    value_format: ClassVar[str] = "%.1f"

    severity: Severity

    def expr(self) -> str:
        return (f"({CERT_EXPIRY} - time()) / {DAY_S} < on (instance, job) group_left ()"
                f" ({CERT_ROTATION_MARGIN} / {DAY_S})")

    def description(self, level: Level) -> str:
        return (f"$file on $instance expires in $value days, inside the rotation margin, for {self.for_}: "
                "no deploy has replaced it. Run the deploy for $instance (roles/pki reissues it); once it "
                "expires, every TLS client of the node refuses it.")

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        return [self._rule(self.expr(), Level(self.severity, 0), runbook_base, self.value_format)]

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        pending, firing, samples = self._timing()
        margin_days = 30  # any margin: the rule reads it from the series, as from the node
        level = Level(self.severity, 0)

        def case(name: str, expires_in_days: float, fires: bool) -> dict[str, Any]:
            expiry = expires_in_days * DAY_S
            left = self.value_format % ((expiry - firing) / DAY_S)
            checks = [] if pending is None or not fires else [_check(pending, self.name, [])]
            return {
                "name": f"{self.name}: {name}",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": [
                    series(CERT_EXPIRY, self.test_labels, constant(expiry, samples)),
                    series(CERT_ROTATION_MARGIN, {k: v for k, v in self.test_labels.items() if k != "file"},
                           constant(margin_days * DAY_S, samples)),
                ],
                "alert_rule_test": [*checks, _check(firing, self.name,
                                                    [self._expected(level, runbook_base, left)] if fires else [])],
            }

        return [
            case(f"silent while {margin_days * 2} days are left of a {margin_days}-day margin", margin_days * 2, False),
            case(f"fires with {margin_days // 3} days left of a {margin_days}-day margin, after {self.for_}",
                 margin_days // 3, True),
            case("fires once expired", -1, True),
        ]


# The answer of a secured listener (exporter-toolkit, toy-redis, the relay) to a missing or wrong login.
LOGIN_REFUSED_STATUS = 401
# nginx's answers on the ports it fronts (Listener.client_cert) to a refused client certificate:
# nginx's own for none sent or one that does not verify against the cluster CA (ssl_verify_client,
# https://nginx.org/en/docs/http/ngx_http_ssl_module.html#errors), and roles/nginx's for a
# certificate whose name is not one of the port's callers.
UNVERIFIED_CERTIFICATE_STATUS = 400
NOT_A_CALLER_STATUS = 403
CERTIFICATE_REFUSED_STATUSES = (UNVERIFIED_CERTIFICATE_STATUS, NOT_A_CALLER_STATUS)


class ScrapeTLSOrLoginFailing(Alert):
    """A secured listener that is up (its port accepts connections) but cannot be used: it refuses
    the cluster's login (401), its TLS fails (no HTTP answer over https: an unknown CA, an expired
    certificate, a wrong name, plain HTTP on the port), or blackbox gets in while Prometheus's own
    scrape fails (Prometheus's password file or CA). A listener that is simply down is
    InstanceDown's, not this alert's."""

    name = "ScrapeTLSOrLoginFailing"
    group = "tls"
    summary = "$instance refuses TLS or the login: $reason"

    severity: Severity
    # Samples older than this are the last ones of a target Prometheus no longer scrapes: a restart
    # (e.g. for TLS turned off) writes no stale markers, so the previous run's tls-check series stay
    # visible for the 5-minute lookback, as long as `for`. roles/prometheus checks that two scrape
    # intervals fit in it, so a live target's samples always count.
    fresh_within: Duration

    @model_validator(mode="after")
    def _leftovers_cannot_last_for(self):
        if not TEST_INTERVAL_S * 2 <= seconds(self.fresh_within) < seconds(self.for_):
            raise FieldError("fresh_within", f"expected at least {TEST_INTERVAL_S * 2}s and below `for` "
                                             f"({self.for_}), got {self.fresh_within!r}")
        return self

    REASONS: ClassVar[dict[str, str]] = {
        "login": "login refused",
        "certificate": "client certificate refused",
        "tls": "no answer over TLS",
        "scrape": "Prometheus's own scrape refused",
    }

    def _fresh(self, selector: str) -> str:
        """``selector``'s series whose latest sample is younger than fresh_within."""
        return f"({selector} and timestamp({selector}) > time() - {num(seconds(self.fresh_within))})"

    def expr(self) -> str:
        job = f'job="{TLS_CHECK_JOB}"'
        status = self._fresh(f"probe_http_status_code{{{job}}}")
        port_open = self._fresh(f'probe_success{{{job}, check="{CHECK_PORT}"}}')
        login_works = self._fresh(f'probe_success{{{job}, check="{CHECK_LOGIN}"}}')
        scraped = self._fresh(f'up{{job!="{TLS_CHECK_JOB}"}}')
        branches = [
            (self.REASONS["login"], f"{status} == {LOGIN_REFUSED_STATUS}"),
            (self.REASONS["certificate"], " or ".join(f"{status} == {code}" for code in CERTIFICATE_REFUSED_STATUSES)),
            (self.REASONS["tls"], f"{status} == 0 and on (instance) {port_open} == 1"),
            (self.REASONS["scrape"], f"{scraped} == 0 and on (instance) {login_works} == 1"),
        ]
        return " or ".join(f'label_replace({condition}, "reason", "{reason}", "", "")'
                              for reason, condition in branches)

    def description(self, level: Level) -> str:
        return (f"$instance ($reason) for {self.for_}: Prometheus gets no metrics from it although it "
                "accepts connections. See the runbook for each reason.")

    def rules(self, runbook_base: str) -> list[dict[str, Any]]:
        return [self._rule(self.expr(), Level(self.severity, 0), runbook_base, None)]

    def tests(self, runbook_base: str) -> list[dict[str, Any]]:
        pending, firing, samples = self._timing()
        level = Level(self.severity, 0)
        instance = "worker-node-12:<port>"
        probe = {"check": CHECK_LOGIN, "instance": instance, "job": TLS_CHECK_JOB, "listener": "metrics",
                 "service": "node_exporter"}
        port = {**probe, "check": CHECK_PORT}
        scrape = {"instance": instance, "job": "node"}

        def expected(labels: dict[str, str], reason: str) -> dict[str, Any]:
            fields = {**labels, "reason": reason, "value": ""}
            return {"exp_labels": {**labels, "reason": reason, "severity": level.severity},
                    "exp_annotations": self._annotations(level, runbook_base, fields)}

        def case(name: str, status: int, port_open: int, up: int, alerts: list,
                 values: Callable[[float], str] = lambda value: constant(value, samples)) -> dict[str, Any]:
            checks = [] if pending is None or not alerts else [_check(pending, self.name, [])]
            return {
                "name": f"{self.name}: {name}",
                "interval": f"{TEST_INTERVAL_S}s",
                "input_series": [
                    series("probe_http_status_code", probe, values(status)),
                    series("probe_success", probe, values(int(200 <= status < 300))),
                    series("probe_success", port, values(port_open)),
                    series("up", scrape, values(up)),
                ],
                "alert_rule_test": [*checks, _check(firing, self.name, alerts)],
            }

        def leftover(name: str, status: int, up: int) -> dict[str, Any]:
            """Every series' last sample at 0s, none after and no stale marker, as a restarted
            Prometheus sees its previous run's targets: not even pending once the samples are older
            than fresh_within, and silent when `for` has passed (the lookback would still show them)."""
            test = case(name, status, 1, up, [], values=lambda value: f"{num(value)} _x{samples - 1}")
            test["alert_rule_test"] = [_check(seconds(self.for_), self.name, [])]
            test["promql_expr_test"] = [{"expr": self.expr(), "exp_samples": [],
                                         "eval_time": duration_text(seconds(self.fresh_within) + TEST_INTERVAL_S)}]
            return test

        return [
            leftover(f"silent on the last samples of a target no longer scraped ({self.REASONS['login']})",
                     LOGIN_REFUSED_STATUS, 0),
            leftover(f"silent on the last samples of a target no longer scraped ({self.REASONS['tls']})", 0, 0),
            leftover(f"silent on the last samples of a target no longer scraped ({self.REASONS['scrape']})", 200, 0),
            case(f"{self.REASONS['login']} after {self.for_}", LOGIN_REFUSED_STATUS, 1, 0,
                 [expected(probe, self.REASONS["login"])]),
            *(case(f"{self.REASONS['certificate']} (HTTP {code}) after {self.for_}", code, 1, 0,
                   [expected(probe, self.REASONS["certificate"])]) for code in CERTIFICATE_REFUSED_STATUSES),
            case(f"{self.REASONS['tls']} after {self.for_}", 0, 1, 0, [expected(probe, self.REASONS["tls"])]),
            case(f"{self.REASONS['scrape']} after {self.for_}", 200, 1, 0, [expected(scrape, self.REASONS["scrape"])]),
            case("silent when the listener is down (InstanceDown's)", 0, 0, 0, []),
            case("silent when all works", 200, 1, 1, []),
        ]


CATALOG: tuple[type[Alert], ...] = (
    InstanceDown, HostMemoryHigh, HostLoadHigh, HostDiskFillingUp,
    ProbeFailed, ProbeSlow,
    ToyRedisDown, ToyRedisLatencyHigh, ToyRedisMemoryGrowing, ToyRedisExpiredKeysNotReclaimed,
    Nginx5xxRatioHigh,
    AlertRelayDown, AlertRelayDeadLetters, AlertRelayCannotAuthenticate,
    FirewallDropsOnServicePort,
    CertificateExpiringSoon, ScrapeTLSOrLoginFailing,
    BackupFailed, BackupStale,
)
