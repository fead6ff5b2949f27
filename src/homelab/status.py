"""`homelab status`: one table of the cluster's health, read from Prometheus and Alertmanager.

Each row is one thing Prometheus should be scraping (from the topology: every scrape target and
health probe, and with pki.tls on blackbox's TLS check of each secured listener, job `tls-check`,
whose state says why a listener that accepts connections cannot be used: ScrapeTLSOrLoginFailing's
reasons): whether its last scrape worked, the version it reports (its `*_build_info`), the
node's last deploy (the stamp deploys/all.py leaves, roles.node_exporter), the error budget left of
the service's SLOs, and the alerts firing on it that no silence or inhibition mutes. Then the
maintenance windows and the newest backup's age.

When Prometheus cannot be reached, the nodes are asked over SSH instead (is each service's unit
active, the deploy stamp's file); when Alertmanager cannot be reached, firing alerts and windows are
unknown. Either is said on a line of its own, and counts as not well. The exit status is 1 when
anything is down, unknown, firing or unreachable, 0 when all is well.

Labels, annotations and silence comments are anyone's who can reach Alertmanager: the table shows
their control characters escaped (homelab.terminal); JSON escapes them by itself.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import requests

from homelab.access import Access
from homelab.alerts.catalog import TLS_CHECK_JOB
from homelab.ssh import SSH_TIMEOUT_S, ssh_argv
from homelab.alerts.slos import BUDGET_LEFT, CATALOG
from homelab.maintenance import HTTP_TIMEOUT_S, CommandError, alertmanager, windows
from homelab.terminal import printable
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.types import duration_text

# instance labels: "worker-node-12:<port>", "worker-node-12", "http://worker-node-12:<port>/healthz"
_INSTANCE_HOST = re.compile(r"^(?:https?://)?([^:/]+)")
# Units of the listeners whose role runs more than one service; the others' is the role's SERVICE.
_UNITS = {("nginx", "http"): "nginx", ("nginx", "redirect"): "nginx",
          ("nginx", "exporter"): "prometheus-nginx-exporter", ("nginx", "mtail"): "mtail"}
NO_VALUE = "-"


@dataclass
class Row:
    node: str
    service: str  # the scrape job
    instance: str
    # up, down, unknown (Prometheus has no such series yet, or the node did not answer); a TLS check's
    # may also be a reason its listener is unusable ("login refused", "no answer over TLS", "HTTP 500").
    state: str
    version: str = NO_VALUE
    error_budget_left: float | None = None  # the lowest of the service's SLOs'
    firing: list[str] = field(default_factory=list)
    # Internal: the systemd unit serving it, asked over SSH when Prometheus is down.
    unit: str = field(default="", repr=False)


@dataclass
class Status:
    rows: list[Row]
    maintenance: list[dict[str, Any]]
    error_budget_left: dict[str, float | None]
    # Firing alerts on nothing in the topology (e.g. a service-wide alert without an instance).
    other_firing: list[str]
    # node -> {"time": ISO time, "commit": ...} of the last deploy that changed it; absent: never stamped.
    last_deploy: dict[str, dict[str, str]] = field(default_factory=dict)
    last_backup: str | None = None  # ISO time of the newest backup
    # What could not be asked, one line each ("Prometheus unreachable: ...").
    unreachable: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (all(row.state == "up" and not row.firing for row in self.rows) and not self.other_firing
                and not self.unreachable)


def _prometheus_query(prometheus: Access, query: str) -> list[dict[str, Any]]:
    url = prometheus.url()
    try:
        response = prometheus.get("/api/v1/query", params={"query": query}, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise CommandError(f"cannot reach Prometheus at {url} ({type(exc).__name__})") from None
    if not response.ok:
        raise CommandError(f"Prometheus at {url} refused query {query!r}: HTTP {response.status_code}")
    return response.json()["data"]["result"]


def _unit(role: str, listener: str) -> str:
    from importlib import import_module

    if (role, listener) in _UNITS:
        return _UNITS[role, listener]
    module = import_module(f"roles.{role}")
    app = getattr(module, "APP", None)
    return app.service if app else module.SERVICE


def expected_targets(topology: Topology) -> list[tuple[str, str, str, str]]:
    """(node, job, instance, systemd unit) of everything Prometheus scrapes, as the deploy configures it."""
    from roles.prometheus import PROBE_JOB

    targets = [(endpoint.host, job.name, endpoint.instance, _unit(job.role, ROLE_BY_NAME[job.role].scrape[job.name]))
               for job in topology.scrape_jobs() for endpoint in job.targets]
    if topology.hosts_of("blackbox"):  # without a prober, nothing probes
        targets += [(probe.endpoint.host, PROBE_JOB, probe.instance, _unit(probe.role, probe.listener))
                    for probe in topology.health_probes()]
    targets += [(check.endpoint.host, TLS_CHECK_JOB, check.endpoint.instance, _unit(check.role, check.listener))
                for check in topology.tls_checks()]
    return sorted(targets)


# What blackbox's two probes of a secured listener (roles.prometheus.tls_check_targets) read for it.
TLS_CHECK_QUERY = f'{{job="{TLS_CHECK_JOB}", __name__=~"probe_success|probe_http_status_code"}}'


def tls_check_states(samples: list[dict[str, Any]]) -> dict[str, str]:
    """instance -> the state of its TLS check, from TLS_CHECK_QUERY's answer: up when blackbox gets
    the metrics over https with its login, else why not, as ScrapeTLSOrLoginFailing words it."""
    from homelab.alerts.catalog import (CERTIFICATE_REFUSED_STATUSES, CHECK_LOGIN, CHECK_PORT, LOGIN_REFUSED_STATUS,
                                        ScrapeTLSOrLoginFailing)

    values: dict[tuple[str, str, str], float] = {}
    for sample in samples:
        labels = sample["metric"]
        values[labels.get("instance", ""), labels.get("__name__", ""), labels.get("check", "")] = float(sample["value"][1])
    states = {}
    for instance in {instance for instance, _, _ in values}:
        status = values.get((instance, "probe_http_status_code", CHECK_LOGIN))
        if values.get((instance, "probe_success", CHECK_LOGIN)) == 1:
            states[instance] = "up"
        elif status == LOGIN_REFUSED_STATUS:
            states[instance] = ScrapeTLSOrLoginFailing.REASONS["login"]
        elif status in CERTIFICATE_REFUSED_STATUSES:
            states[instance] = ScrapeTLSOrLoginFailing.REASONS["certificate"]
        elif values.get((instance, "probe_success", CHECK_PORT)) == 0:
            states[instance] = "down"
        elif status:
            states[instance] = f"HTTP {status:.0f}"
        elif status == 0:
            states[instance] = ScrapeTLSOrLoginFailing.REASONS["tls"]
    return states


def _slo_jobs() -> dict[str, str]:
    return {slo.name: slo.job for slo in CATALOG}


def _from_prometheus(topology: Topology, rows: list[Row], status: Status, answers: dict[str, list]) -> None:
    up = {(s["metric"].get("job"), s["metric"].get("instance")): s["value"][1] for s in answers["up"]}
    versions = {(s["metric"].get("job"), s["metric"].get("instance")): s["metric"].get("version", NO_VALUE)
                for s in answers["versions"]}
    tls_checks = tls_check_states(answers["tls_checks"])
    for row in rows:
        if row.service == TLS_CHECK_JOB:
            row.state = tls_checks.get(row.instance, "unknown")
            continue
        row.state = {"1": "up", "0": "down"}.get(up.get((row.service, row.instance)), "unknown")
        row.version = versions.get((row.service, row.instance), NO_VALUE)
    for sample in answers["deploys"]:
        host = _INSTANCE_HOST.match(sample["metric"].get("instance", ""))
        if host and host.group(1) in topology.hosts:
            status.last_deploy[host.group(1)] = {"time": _iso(float(sample["value"][1])),
                                                 "commit": sample["metric"].get("commit", NO_VALUE)}
    # NaN when there were no events over the period at all: nothing spent, nothing to say.
    status.error_budget_left = dict(sorted(
        (sample["metric"].get("slo", "?"), None if math.isnan(float(sample["value"][1])) else float(sample["value"][1]))
        for sample in answers["budgets"]))


def _from_nodes(topology: Topology, rows: list[Row], status: Status) -> None:
    """Each row's unit state and each node's deploy stamp, asked over SSH (one connection per node)."""
    from roles.node_exporter import DEPLOY_METRIC, DEPLOY_STAMP_FILE

    def ask(node: str) -> tuple[str, list[Row], str | None]:
        mine = [row for row in rows if row.node == node]
        stamp = f"{topology.settings(node, 'node_exporter').textfile_directory}/{DEPLOY_STAMP_FILE}"
        units = " ".join(shlex.quote(row.unit) for row in mine)
        script = f"systemctl is-active {units}; echo ---; cat {shlex.quote(stamp)} 2>/dev/null || true"
        try:
            result = subprocess.run(ssh_argv(topology, node, script), capture_output=True, text=True,
                                    timeout=SSH_TIMEOUT_S * 2)
        except subprocess.TimeoutExpired:
            return node, mine, None
        if result.returncode == 255 or "---" not in result.stdout:
            return node, mine, None
        return node, mine, result.stdout

    with ThreadPoolExecutor(max_workers=len(topology.hosts) or 1) as pool:
        for node, mine, output in pool.map(ask, topology.hosts):
            if output is None:
                status.unreachable.append(f"{node}: no answer over SSH")
                continue
            states, stamp = output.split("---", 1)
            for row, state in zip(mine, states.split()):
                row.state = {"active": "up"}.get(state, "down")
            match = re.search(rf'^{DEPLOY_METRIC}{{commit="([^"]*)"}} ([0-9.e+]+)$', stamp, re.MULTILINE)
            if match:
                status.last_deploy[node] = {"time": _iso(float(match.group(2))), "commit": match.group(1)}


def _from_alertmanager(topology: Topology, rows: list[Row], status: Status) -> None:
    manager = alertmanager(topology)
    by_target = {(row.service, row.instance): row for row in rows}
    for alert in sorted(manager.firing(), key=lambda alert: alert["labels"].get("alertname", "")):
        labels = alert["labels"]
        name = f"{labels.get('alertname', '?')}({labels['severity']})" if "severity" in labels else labels.get("alertname", "?")
        row = by_target.get((labels.get("job"), labels.get("instance")))
        if row is None:
            # Alerts computed from another job's series (probes, SLOs) name the node in instance, if at all.
            host = _INSTANCE_HOST.match(labels.get("instance", ""))
            candidates = [r for r in rows if host and r.node == host.group(1) and r.service == labels.get("job")]
            row = candidates[0] if candidates else None
        if row is None:
            status.other_firing.append(name if "job" not in labels else f"{name} job={labels['job']}")
        else:
            row.firing.append(name)
    status.maintenance = [{"nodes": list(window.nodes), "ends": window.ends.isoformat(), "reason": window.reason}
                          for window in windows(topology, manager)]


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone.utc).isoformat(timespec="seconds")


def newest_backup(topology: Topology) -> datetime | None:
    """The newest finished backup's time in the cluster's backup folder (None: none yet, or the
    backup settings are invalid, which `homelab backup` itself reports)."""
    from homelab.backup import newest_backup_time
    from homelab.backup.settings import backup_settings
    from homelab.config import ConfigError

    try:
        return newest_backup_time(backup_settings(topology).directory)
    except ConfigError:
        return None


def collect(topology: Topology) -> Status:
    from roles.node_exporter import DEPLOY_METRIC

    rows = [Row(node, job, instance, "unknown", unit=unit) for node, job, instance, unit in expected_targets(topology)]
    status = Status(rows, [], {}, [])
    prometheus = topology.access("prometheus")
    queries = {"up": "up", "versions": '{__name__=~".+_build_info"}', "deploys": DEPLOY_METRIC, "budgets": BUDGET_LEFT,
               "tls_checks": TLS_CHECK_QUERY}

    def attempt(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except CommandError as exc:
            return exc

    # Every question at once: each is a round trip to a different process.
    with ThreadPoolExecutor(max_workers=len(queries) + 1) as pool:
        asked = {key: pool.submit(attempt, lambda query=query: _prometheus_query(prometheus, query))
                 for key, query in queries.items()}
        from_alertmanager = pool.submit(attempt, lambda: _from_alertmanager(topology, rows, status))
        answers = {key: future.result() for key, future in asked.items()}
        failed = next((answer for answer in answers.values() if isinstance(answer, CommandError)), None)
        if failed:
            status.unreachable.append(f"Prometheus: {failed}; services and deploys asked over SSH")
            _from_nodes(topology, rows, status)
        else:
            _from_prometheus(topology, rows, status, answers)
        manager_failed = from_alertmanager.result()
        if isinstance(manager_failed, CommandError):
            status.unreachable.append(f"Alertmanager: {manager_failed}; firing alerts and maintenance unknown")
    slo_jobs = _slo_jobs()
    for row in rows:
        budgets = [left for slo, left in status.error_budget_left.items() if slo_jobs.get(slo) == row.service and left is not None]
        row.error_budget_left = min(budgets) if budgets else None
    backup = newest_backup(topology)
    status.last_backup = backup.isoformat(timespec="seconds") if backup else None
    return status


def as_json(status: Status) -> str:
    report = asdict(status)
    for row in report["rows"]:
        del row["unit"]
    return json.dumps({**report, "healthy": status.healthy}, indent=2)


def _age(iso_time: str | None, now: float) -> str:
    if not iso_time:
        return NO_VALUE
    return duration_text(max(0, int(now - datetime.fromisoformat(iso_time).timestamp()))) + " ago"


def as_table(status: Status, colour: bool, now: float | None = None) -> str:
    now = time.time() if now is None else now

    def paint(text: str, good: bool) -> str:
        return f"\033[{32 if good else 31}m{text}\033[0m" if colour else text

    header = ("NODE", "SERVICE", "STATE", "VERSION", "INSTANCE", "LAST DEPLOY", "BUDGET", "FIRING")
    cells, shown_nodes = [], set()
    for row in status.rows:
        deploy = status.last_deploy.get(row.node)
        # Node-wide facts on the node's first row only.
        deployed = "" if row.node in shown_nodes else (
            f"{_age(deploy['time'], now)} ({deploy['commit']})" if deploy else NO_VALUE)
        shown_nodes.add(row.node)
        budget = NO_VALUE if row.error_budget_left is None else f"{row.error_budget_left * 100:.1f}%"
        # Everything from Prometheus or Alertmanager is printed through printable(): anyone may post labels.
        cells.append(tuple(map(printable, (row.node, row.service, row.state, row.version, row.instance, deployed, budget,
                                           ", ".join(row.firing)))))
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(len(header) - 1)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(header, widths)) + "  FIRING"]
    for row, line in zip(status.rows, cells):
        padded = [text.ljust(width) for text, width in zip(line, widths)]
        padded[2] = paint(padded[2], row.state == "up")
        lines.append("  ".join(padded) + ("  " + paint(line[-1], False) if line[-1] else ""))
    for name in status.other_firing:
        lines.append(f"firing: {paint(printable(name), False)}")
    for problem in status.unreachable:
        lines.append(f"unreachable: {paint(printable(problem), False)}")
    for window in status.maintenance:
        lines.append(printable(f"maintenance: {','.join(window['nodes'])} until {window['ends']} ({window['reason']})"))
    for slo, left in status.error_budget_left.items():
        lines.append(printable(f"error budget left: {slo} ") + ("no events yet" if left is None else f"{left * 100:.1f}%"))
    lines.append(f"last backup: {_age(status.last_backup, now)}")
    return "\n".join(line.rstrip() for line in lines)


def show(topology: Topology, json_output: bool) -> int:
    status = collect(topology)
    print(as_json(status) if json_output else as_table(status, colour=sys.stdout.isatty()))
    return 0 if status.healthy else 1
