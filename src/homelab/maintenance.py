"""Maintenance windows: Alertmanager silences (API v2) for nodes taken down on purpose.

A window on some nodes is a set of silences, each ending when the window does:

- per node, one on the `instance` label, which every scrape of the node carries
  (``worker-node-12:<port>``) and every probe of it too (``http://worker-node-12:<port>/healthz``);
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

from pydantic import TypeAdapter, ValidationError

from homelab.config import ConfigError
from homelab.terminal import printable
from homelab.access import Access
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
    names = listeners if listeners is not None else tuple(listener.name for listener in topology.listeners(node, role))
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

    def __init__(self, access: Access, timeout_s: float = HTTP_TIMEOUT_S):
        self.access = access
        self.url = access.url()
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests  # here: every deploy imports this module (restart_matchers), few of them call

        try:
            response = self.access.request(method, f"/api/v2{path}", timeout=self.timeout_s, **kwargs)
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
    return Alertmanager(topology.access("alertmanager"), timeout_s)


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


# --- notices in Slack: the relay's webhook, spoken as Alertmanager speaks it ---------------------

NOTICE_ALERTNAME = "MaintenanceWindow"
NOTICE_SEVERITY = "info"


def notice(node: str, reason: str, starts: datetime, ends: datetime, status: str, by: str,
           external_url: str) -> dict[str, Any]:
    """An Alertmanager webhook notification (version 4) saying a window on ``node`` started (firing)
    or ended (resolved), so that the relay routes it like the node's alerts (by its labels) and
    threads the end under the start (same group, same start time)."""
    labels = {"alertname": NOTICE_ALERTNAME, "instance": node, "severity": NOTICE_SEVERITY}
    if status == "firing":
        summary = f"Maintenance of {node} until {ends.strftime('%Y-%m-%d %H:%M')} UTC: {reason}"
        description = f"Its alerts are silenced until then (`homelab maintenance start` by {by})."
    else:
        summary = f"Maintenance of {node} is over: {reason}"
        description = f"Its alerts notify again (`homelab maintenance end` by {by})."
    alert = {"status": status, "labels": labels, "annotations": {"summary": summary, "description": description},
             "startsAt": _iso(starts), "endsAt": _iso(ends), "generatorURL": "", "fingerprint": ""}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{NOTICE_ALERTNAME}", instance="{node}"}}',
            "truncatedAlerts": 0, "status": status, "receiver": "homelab-maintenance", "groupLabels": labels,
            "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": external_url,
            "alerts": [alert]}


def post_notices(topology: Topology, notices: list[dict[str, Any]]) -> str | None:
    """Send ``notices`` to the relay's Alertmanager webhook; None, or why they could not all be sent.

    The window itself is the silences: a relay that cannot be reached costs the notice, not the window.
    """
    from homelab.vault import load_vault
    from roles.alertmanager import TOKEN_SECRET, WEBHOOK_PATH

    relays = topology.hosts_of("alert_relay")
    if not notices or not relays:
        return None
    relay = topology.access("alert_relay")
    url = relay.url(WEBHOOK_PATH)
    vault_file, password_file = (topology.data(relays[0], key) for key in ("vault_file", "vault_password_file"))
    if not (vault_file and password_file):
        return f"no Slack notice: inventory data for {relays[0]} names no vault_file and vault_password_file"
    try:
        token = load_vault(vault_file, password_file)[TOKEN_SECRET]
    except ConfigError as exc:
        return f"no Slack notice: {exc}"
    except KeyError:
        return f"no Slack notice: {vault_file}: {TOKEN_SECRET}: secret is missing from the vault"
    import requests

    for body in notices:
        try:
            # The webhook's own bearer token, not the operator's login; the cluster CA when it serves TLS.
            response = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S,
                                     verify=relay.verify)
        except requests.RequestException as exc:
            return f"no Slack notice: cannot reach the alert relay at {url} ({type(exc).__name__})"
        if not response.ok:
            return f"no Slack notice: the alert relay at {url} refused it: HTTP {response.status_code} {response.text[:200]}"
    return None


def start(topology: Topology, nodes: list[str], duration: str, reason: str) -> tuple[list[str], str | None]:
    """Open a window on ``nodes`` for ``duration``, replacing any window already on them; the new ids,
    and a warning if a Slack notice could not be sent."""
    length = window_seconds(duration)
    if not reason.strip():
        raise CommandError("--reason: expected a short text saying why, got an empty one")
    silences = silences_for(topology, nodes)
    manager = alertmanager(topology)
    _expired, ended_notices = _end(topology, nodes, manager)
    starts = datetime.now(timezone.utc)
    ends = starts + timedelta(seconds=length)
    reason = " ".join(reason.split())
    ids = [manager.create(silence.matchers, ends, operator(), f"{COMMENT_PREFIX}{','.join(silence.nodes)}: {reason}")
           for silence in silences]
    started = [notice(node, reason, starts, ends, "firing", operator(), manager.url) for node in sorted(set(nodes))]
    return ids, post_notices(topology, ended_notices + started)


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


def end(topology: Topology, nodes: list[str]) -> tuple[list[str], str | None]:
    """Expire every window silence covering any of ``nodes``; the ids expired, and a warning if a
    Slack notice could not be sent."""
    expired, notices = _end(topology, nodes, alertmanager(topology))
    return expired, post_notices(topology, notices)


def _end(topology: Topology, nodes: list[str], manager: Alertmanager) -> tuple[list[str], list[dict[str, Any]]]:
    """Expire the window silences covering any of ``nodes``: their ids, and a notice per node whose window ended."""
    silences_for(topology, nodes)  # rejects unknown nodes
    expired, windows_of = [], {}
    for silence_nodes, reason, silence in _ours(manager):
        if set(silence_nodes) & set(nodes):
            manager.expire(silence["id"])
            expired.append(silence["id"])
            for node in set(silence_nodes) & set(nodes):
                if silence["status"]["state"] == "active":
                    windows_of.setdefault(node, (parse_time(silence["startsAt"]), reason))
    now = datetime.now(timezone.utc)
    notices = [notice(node, reason, starts, now, "resolved", operator(), manager.url)
               for node, (starts, reason) in sorted(windows_of.items())]
    return expired, notices


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
