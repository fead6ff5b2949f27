"""Maintenance windows: Alertmanager silences (API v2) for nodes taken down on purpose.

A window on some nodes is a set of silences, each ending when the window does:

- per node, one on the `instance` label, which every scrape of the node carries
  (``worker-node-12:9100``) and every probe of it too (``http://worker-node-12:80/healthz``);
- per service (Prometheus scrape job) that runs only on nodes in the window, one on
  ``job=<service>, instance=""``: alerts about the service as a whole, which have no instance.

Every silence's comment starts with ``maintenance of NODE[,NODE...]:`` followed by the reason; that
prefix is how `list` and `end` find a window's silences among any others (amtool's, Grafana's).
"""

from __future__ import annotations

import getpass
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import requests
from pydantic import TypeAdapter, ValidationError

from homelab.terminal import printable
from homelab.topology import Topology
from homelab.types import Duration, seconds

# A forgotten window would mute a node for good; a week covers any planned work.
MAX_WINDOW_S = 7 * 86400
# Every request to Alertmanager; it answers in milliseconds when healthy.
HTTP_TIMEOUT_S = 10
COMMENT_PREFIX = "maintenance of "
_COMMENT = re.compile(r"^maintenance of ([^:\s]+): (.*)$", re.DOTALL)


class CommandError(RuntimeError):
    """A one-line, user-facing failure (bad argument, Alertmanager or Prometheus unreachable or refusing)."""


def window_seconds(text: str) -> float:
    """``--for`` as seconds: a Prometheus duration (30m, 1h30m, 2d) above 0 and at most a week."""
    try:
        TypeAdapter(Duration).validate_python(text)
    except ValidationError:
        raise CommandError(f"--for: expected a duration like 30m, 2h or 1d, got {text!r}") from None
    total = seconds(text)
    if not 0 < total <= MAX_WINDOW_S:
        raise CommandError(f"--for: expected more than 0s and at most 7d, got {text!r}")
    return total


def _matcher(name: str, value: str, regex: bool = False) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": True}


def instance_pattern(node: str) -> str:
    """An (anchored, RE2) regex matching every `instance` label naming ``node``: scrapes and probes."""
    return rf"(https?://)?{re.escape(node)}(:[0-9]+)?(/.*)?"


@dataclass(frozen=True)
class Silence:
    """One silence to create: its matchers and which nodes' window it belongs to."""

    nodes: tuple[str, ...]
    matchers: tuple[dict[str, Any], ...]


def silences_for(topology: Topology, nodes: list[str]) -> list[Silence]:
    """The silences of a window on ``nodes`` (validated against the inventory first)."""
    unknown = [node for node in nodes if node not in topology.hosts]
    if unknown:
        raise CommandError(f"unknown node {unknown[0]!r}: expected one of {', '.join(topology.hosts)}")
    chosen = sorted(set(nodes))
    silences = [Silence((node,), (_matcher("instance", instance_pattern(node), regex=True),)) for node in chosen]
    for job in topology.scrape_jobs():
        serving = sorted({target.host for target in job.targets})
        if serving and set(serving) <= set(chosen):
            silences.append(Silence(tuple(serving), (_matcher("job", job.name), _matcher("instance", ""))))
    return silences


def service_instances(topology: Topology, node: str, role: str, listeners: tuple[str, ...] | None = None) -> list[str]:
    """The `instance` labels of ``role``'s ``listeners`` (default: all) on ``node``: its scrapes and probes."""
    from homelab.topology import ROLE_BY_NAME

    names = listeners if listeners is not None else tuple(listener.name for listener in ROLE_BY_NAME[role].listeners)
    instances = {topology.endpoint(role, node, name).instance for name in names}
    instances |= {probe.instance for probe in topology.health_probes()
                  if probe.role == role and probe.endpoint.host == node and probe.endpoint.instance in instances}
    return sorted(instances)


def restart_matchers(topology: Topology, node: str, role: str,
                     listeners: tuple[str, ...] | None = None) -> tuple[dict[str, Any], ...]:
    """Matchers of the alerts about ``role``'s service on ``node`` (none: it has no port to alert on)."""
    instances = service_instances(topology, node, role, listeners)
    if not instances:
        return ()
    return (_matcher("instance", "|".join(re.escape(instance) for instance in instances), regex=True),)


@dataclass(frozen=True)
class Window:
    """Silences sharing nodes, reason and end: one line of `maintenance list`."""

    nodes: tuple[str, ...]
    reason: str
    state: str
    starts: datetime
    ends: datetime
    created_by: str
    ids: tuple[str, ...]


class Alertmanager:
    """The few calls of Alertmanager's API v2 that maintenance windows need."""

    def __init__(self, url: str, timeout_s: float = HTTP_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = requests.request(method, f"{self.url}/api/v2{path}", timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise CommandError(f"cannot reach Alertmanager at {self.url} ({reason})") from None
        if not response.ok:
            detail = " ".join(response.text.split())[:200]
            raise CommandError(f"Alertmanager at {self.url} refused {method} {path}: "
                                   f"HTTP {response.status_code} {detail}")
        return response.json() if response.content else None

    def create(self, matchers: tuple[dict[str, Any], ...], ends: datetime, created_by: str, comment: str) -> str:
        body = {"matchers": list(matchers), "startsAt": _iso(datetime.now(timezone.utc)), "endsAt": _iso(ends),
                "createdBy": created_by, "comment": comment}
        return self._call("POST", "/silences", json=body)["silenceID"]

    def silences(self) -> list[dict[str, Any]]:
        return self._call("GET", "/silences")

    def firing(self) -> list[dict[str, Any]]:
        """Alerts firing now that no silence or inhibition mutes."""
        return self._call("GET", "/alerts", params={"active": "true", "silenced": "false", "inhibited": "false"})

    def expire(self, silence_id: str) -> None:
        self._call("DELETE", f"/silence/{silence_id}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    # Alertmanager writes nanoseconds (2026-11-29T12:00:00.123456789Z); Python parses microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def alertmanager(topology: Topology, timeout_s: float = HTTP_TIMEOUT_S) -> Alertmanager:
    return Alertmanager(topology.endpoint("alertmanager").url(), timeout_s)


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def start(topology: Topology, nodes: list[str], duration: str, reason: str) -> list[str]:
    """Open a window on ``nodes`` for ``duration``, replacing any window already on them; the new ids."""
    length = window_seconds(duration)
    if not reason.strip():
        raise CommandError("--reason: expected a short text saying why, got an empty one")
    silences = silences_for(topology, nodes)
    manager = alertmanager(topology)
    end(topology, nodes, manager)
    ends = datetime.now(timezone.utc) + timedelta(seconds=length)
    reason = " ".join(reason.split())
    return [manager.create(silence.matchers, ends, operator(), f"{COMMENT_PREFIX}{','.join(silence.nodes)}: {reason}")
            for silence in silences]


def _ours(manager: Alertmanager) -> list[tuple[tuple[str, ...], str, dict[str, Any]]]:
    """(nodes, reason, silence) of every window silence not yet expired."""
    found = []
    for silence in manager.silences():
        match = _COMMENT.match(silence.get("comment", ""))
        if match and silence["status"]["state"] != "expired":
            found.append((tuple(match.group(1).split(",")), match.group(2), silence))
    return found


def windows(topology: Topology, manager: Alertmanager | None = None) -> list[Window]:
    """The windows not yet over (active, or pending when they start later), soonest end first."""
    grouped: dict[tuple[str, str, str], list[tuple[tuple[str, ...], dict[str, Any]]]] = {}
    for nodes, reason, silence in _ours(manager or alertmanager(topology)):
        grouped.setdefault((reason, silence["endsAt"], silence["createdBy"]), []).append((nodes, silence))
    found = []
    for (reason, ends, created_by), members in grouped.items():
        first = members[0][1]
        nodes = tuple(sorted({node for member_nodes, _ in members for node in member_nodes}))
        found.append(Window(nodes, reason, first["status"]["state"], parse_time(first["startsAt"]),
                            parse_time(ends), created_by, tuple(silence["id"] for _, silence in members)))
    return sorted(found, key=lambda window: (window.ends, window.nodes))


def end(topology: Topology, nodes: list[str], manager: Alertmanager | None = None) -> list[str]:
    """Expire every window silence covering any of ``nodes``; the ids expired."""
    silences_for(topology, nodes)  # rejects unknown nodes
    manager = manager or alertmanager(topology)
    expired = []
    for silence_nodes, _reason, silence in _ours(manager):
        if set(silence_nodes) & set(nodes):
            manager.expire(silence["id"])
            expired.append(silence["id"])
    return expired


def table(found: list[Window], now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    rows = [("NODES", "STATE", "ENDS (UTC)", "LEFT", "BY", "REASON")]
    for window in found:
        left = max(0, int((window.ends - now).total_seconds()))
        # Everything but the times comes from silences, which anyone reaching Alertmanager may post.
        rows.append(tuple(map(printable, (",".join(window.nodes), window.state, window.ends.strftime("%Y-%m-%d %H:%M"),
                                          f"{left // 3600}h{left % 3600 // 60:02d}m", window.created_by, window.reason))))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip()
                     for row in rows)
