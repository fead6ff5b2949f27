"""`homelab status`: one table of the cluster's health, read from Prometheus and Alertmanager.

Each row is one thing Prometheus should be scraping (from the topology: every scrape target and
health probe), with whether its last scrape worked, and the alerts firing on it that no silence or
inhibition mutes. Then the maintenance windows and the SLOs' error budget left. The exit status is
1 when anything is down, unknown (no scrape yet) or firing, 0 when all is well.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from homelab.alerts.slos import BUDGET_LEFT
from homelab.maintenance import HTTP_TIMEOUT_S, CommandError, alertmanager, windows
from homelab.topology import Topology

# instance labels: "worker-node-12:9100", "worker-node-12", "http://worker-node-12:3000/healthz"
_INSTANCE_HOST = re.compile(r"^(?:https?://)?([^:/]+)")


@dataclass
class Row:
    node: str
    service: str  # the scrape job
    instance: str
    state: str  # up, down, unknown (Prometheus has no such series yet)
    firing: list[str] = field(default_factory=list)


@dataclass
class Status:
    rows: list[Row]
    maintenance: list[dict[str, Any]]
    error_budget_left: dict[str, float | None]
    # Firing alerts on nothing in the topology (e.g. a service-wide alert without an instance).
    other_firing: list[str]

    @property
    def healthy(self) -> bool:
        return all(row.state == "up" and not row.firing for row in self.rows) and not self.other_firing


def _prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    try:
        response = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise CommandError(f"cannot reach Prometheus at {url} ({type(exc).__name__})") from None
    if not response.ok:
        raise CommandError(f"Prometheus at {url} refused query {query!r}: HTTP {response.status_code}")
    return response.json()["data"]["result"]


def expected_targets(topology: Topology) -> list[tuple[str, str, str]]:
    """(node, job, instance) of everything Prometheus scrapes, as the deploy configures it."""
    from roles.prometheus import PROBE_JOB

    targets = [(endpoint.host, job.name, endpoint.instance) for job in topology.scrape_jobs() for endpoint in job.targets]
    if topology.hosts_of("blackbox"):  # without a prober, nothing probes
        targets += [(probe.endpoint.host, PROBE_JOB, probe.instance) for probe in topology.health_probes()]
    return sorted(targets)


def collect(topology: Topology) -> Status:
    prometheus = topology.endpoint("prometheus").url()
    manager = alertmanager(topology)
    up = {(sample["metric"].get("job"), sample["metric"].get("instance")): sample["value"][1]
          for sample in _prometheus_query(prometheus, "up")}
    rows = [Row(node, job, instance, {"1": "up", "0": "down"}.get(up.get((job, instance)), "unknown"))
            for node, job, instance in expected_targets(topology)]
    by_target = {(row.service, row.instance): row for row in rows}
    other = []
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
            other.append(name if "job" not in labels else f"{name} job={labels['job']}")
        else:
            row.firing.append(name)
    # NaN when there were no events over the period at all: nothing spent, nothing to say.
    budget = {sample["metric"].get("slo", "?"): None if math.isnan(float(sample["value"][1])) else float(sample["value"][1])
              for sample in _prometheus_query(prometheus, BUDGET_LEFT)}
    maintenance = [{"nodes": list(window.nodes), "ends": window.ends.isoformat(), "reason": window.reason}
                   for window in windows(topology, manager)]
    return Status(rows, maintenance, dict(sorted(budget.items())), other)


def as_json(status: Status) -> str:
    return json.dumps({**asdict(status), "healthy": status.healthy}, indent=2)


def as_table(status: Status, colour: bool) -> str:
    def paint(text: str, good: bool) -> str:
        return f"\033[{32 if good else 31}m{text}\033[0m" if colour else text

    header = ("NODE", "SERVICE", "STATE", "INSTANCE", "FIRING")
    cells = [(row.node, row.service, row.state, row.instance, ", ".join(row.firing)) for row in status.rows]
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(4)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(header, widths)) + "  FIRING"]
    for row, line in zip(status.rows, cells):
        padded = [text.ljust(width) for text, width in zip(line, widths)]
        padded[2] = paint(padded[2], row.state == "up")
        lines.append("  ".join(padded) + ("  " + paint(line[4], False) if line[4] else ""))
    for name in status.other_firing:
        lines.append(f"firing: {paint(name, False)}")
    for window in status.maintenance:
        lines.append(f"maintenance: {','.join(window['nodes'])} until {window['ends']} ({window['reason']})")
    for slo, left in status.error_budget_left.items():
        lines.append(f"error budget left: {slo} " + ("no events yet" if left is None else f"{left * 100:.1f}%"))
    return "\n".join(line.rstrip() for line in lines)


def show(topology: Topology, json_output: bool) -> int:
    status = collect(topology)
    print(as_json(status) if json_output else as_table(status, colour=sys.stdout.isatty()))
    return 0 if status.healthy else 1
