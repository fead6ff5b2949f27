"""The webhook server: Alertmanager and FAX.PLUS in, durable queue out, plus /healthz and /metrics.

stdlib's ThreadingHTTPServer: the load is a few notifications a minute (a few hundred a second at
worst, see bench/relay_accept.py), each request is one short SQLite commit, and it adds nothing to
the wheels shipped to the node.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from alert_relay import metrics
from alert_relay.routes import SlackRoutes, e164
from alert_relay.store import Store

log = logging.getLogger("alert_relay")


class BadRequest(Exception):
    """Answered 400 with its text as the reason."""


# Incoming payloads: unknown fields are ignored (senders add fields over time), missing ones are errors.
class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Alert(Lenient):
    status: str = Field(pattern="^(firing|resolved)$")
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: str
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerNotification(Lenient):
    version: str
    groupKey: str
    status: str = Field(pattern="^(firing|resolved)$")
    receiver: str = ""
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1)


class FaxHook(Lenient):
    id: str | int
    event: str
    event_time: str = ""


class FaxData(Lenient):
    id: str | int
    sender: str = Field(validation_alias=AliasChoices("from", "from_number"))
    to: str = Field("", validation_alias=AliasChoices("to", "to_number"))
    pages: int | None = None
    start_time: str = ""
    file: str
    file_name: str = ""
    status: str = ""


class FaxWebhook(Lenient):
    hook: FaxHook
    data: FaxData


def _reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    first, *rest = dicts
    return {k: v for k, v in first.items() if all(other.get(k) == v for other in rest)}


def alert_messages(note: AlertmanagerNotification, routes: SlackRoutes) -> list[tuple[str, str, str, dict]]:
    """(dedup key, kind, channel, payload): the notification's alerts, one message per channel they route to.

    The key is what the channel would be told: the group, and each alert occurrence (fingerprint and
    start; a resend repeats both, a new firing does not) with its state. A resend, or a group
    change that leaves a channel's alerts as they were, queues nothing for that channel.
    """
    by_channel: dict[str, list[Alert]] = {}
    for alert in note.alerts:
        by_channel.setdefault(routes.alert_channel(alert.labels), []).append(alert)
    messages = []
    for channel, alerts in by_channel.items():
        status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
        occurrences = sorted(f"{a.fingerprint or json.dumps(a.labels, sort_keys=True)}@{a.startsAt}@{a.status}"
                             for a in alerts)
        key = hashlib.sha256("\n".join([note.groupKey, channel, status, *occurrences]).encode()).hexdigest()
        messages.append((f"am:{key}", "alert", channel, {
            "thread_key": f"{note.groupKey}|{channel}",
            "status": status,
            "alerts": [a.model_dump() for a in alerts],
            "common_labels": _common([a.labels for a in alerts]),
            "common_annotations": _common([a.annotations for a in alerts]),
            "external_url": note.externalURL,
        }))
    return messages


def fax_message(hook: FaxWebhook, channel: str) -> list[tuple[str, str, str, dict]]:
    data = hook.data
    stem = os.path.splitext(os.path.basename(data.file_name))[0] if data.file_name else f"fax-{data.id}"
    return [(f"fax:{hook.hook.id}:{data.id}", "fax", channel, {
        "fax_id": str(data.id),
        "file_id": data.file,
        "file_name": f"{stem}.pdf",  # we download the PDF rendering, whatever the stored format
        "sender": e164(data.sender),
        "to": data.to,
        "pages": data.pages,
        "start_time": data.start_time,
    })]


class RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # Alertmanager opens many connections at once after an outage

    def __init__(self, address: tuple[str, int], *, store: Store, routes: SlackRoutes, on_queued,
                 alertmanager_token: str, fax_token: str, max_body_bytes: int, healthy):
        self.store, self.routes, self.on_queued = store, routes, on_queued
        self.alertmanager_token, self.fax_token = alertmanager_token.encode(), fax_token.encode()
        self.max_body_bytes = max_body_bytes
        self.healthy = healthy
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Alertmanager reuses connections
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    server: RelayServer
    server_version = "alert-relay"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would carry the fax webhook's token, which is in its path

    def _reply(self, status: int, body: dict[str, Any] | bytes, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, reason: str, metric_reason: str) -> None:
        metrics.REJECTED.labels(metric_reason).inc()
        path = "/fax/…" if self.path.startswith("/fax/") else self.path.split("?")[0][:100]
        log.warning("request refused", extra={"fields": {"status": status, "path": path, "reason": reason,
                                                          "client": self.client_address[0]}})
        self._reply(status, {"error": reason})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            try:
                self.server.store.ping()
            except sqlite3.Error as exc:
                self._reply(503, {"status": "queue unavailable", "error": str(exc)})
                return
            if not self.server.healthy():
                self._reply(503, {"status": "delivery worker stopped"})
                return
            self._reply(200, {"status": "ok"})
        elif self.path == "/metrics":
            self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        started = time.perf_counter()
        if self.path == "/alertmanager":
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), b"Bearer " + self.server.alertmanager_token):
                self.close_connection = True
                self._refuse(401, "missing or wrong bearer token", "unauthorized")
                return
            handle = self._alertmanager
        elif self.path.startswith("/fax/"):
            if not hmac.compare_digest(self.path[len("/fax/"):].encode(), self.server.fax_token):
                self.close_connection = True
                self._refuse(401, "wrong webhook token", "unauthorized")
                return
            handle = self._fax
        else:
            self._reply(404, {"error": "not found"})
            return

        body = self._body()
        if body is None:
            return
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._refuse(400, f"malformed JSON: {exc}", "malformed")
            return
        try:
            answer = handle(payload)
        except BadRequest as exc:
            self._refuse(400, str(exc), "invalid")
            return
        except sqlite3.Error as exc:
            # Not queued: a 5xx makes Alertmanager and FAX.PLUS retry later.
            log.error("cannot queue", extra={"fields": {"error": str(exc)}})
            self._reply(503, {"error": f"cannot queue: {exc}"})
            return
        metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        self._reply(200, answer)

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or self.headers.get("Content-Length") is None:
            self.close_connection = True
            self._refuse(411, "a Content-Length header is required", "no_length")
            return None
        try:
            length = int(self.headers["Content-Length"])
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._refuse(400, "invalid Content-Length", "malformed")
            return None
        if length > self.server.max_body_bytes:
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._refuse(413, f"body of {length} bytes exceeds max_body_bytes {self.server.max_body_bytes}", "too_large")
            return None
        return self.rfile.read(length)

    def _alertmanager(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or payload.get("version") != "4":
            version = payload.get("version") if isinstance(payload, dict) else None
            raise BadRequest(f"unknown payload version {version!r}: expected Alertmanager webhook version \"4\"")
        try:
            note = AlertmanagerNotification.model_validate(payload)
        except ValidationError as exc:
            raise BadRequest(f"invalid Alertmanager notification: {_reason(exc)}") from None
        return self._queue("alert", alert_messages(note, self.server.routes))

    def _fax(self, payload: Any) -> dict[str, Any]:
        try:
            hook = FaxWebhook.model_validate(payload)
        except ValidationError as exc:
            raise BadRequest(f"invalid FAX.PLUS webhook: {_reason(exc)}") from None
        if hook.hook.event != "fax_received":
            log.info("fax event ignored", extra={"fields": {"event": hook.hook.event, "fax_id": str(hook.data.id)}})
            return {"status": "ignored"}
        channel = self.server.routes.fax_channel(hook.data.sender)
        if channel is None:
            metrics.DROPPED_FAXES.inc()
            log.info("fax dropped: sender not listed in routes", extra={"fields": {
                "sender": e164(hook.data.sender), "fax_id": str(hook.data.id)}})
            return {"status": "dropped"}
        return self._queue("fax", fax_message(hook, channel))

    def _queue(self, kind: str, messages: list[tuple[str, str, str, dict]]) -> dict[str, Any]:
        queued = self.server.store.enqueue(messages)
        if not queued:
            metrics.DUPLICATES.labels(kind).inc()
            return {"status": "duplicate"}
        metrics.ACCEPTED.labels(kind).inc()
        self.server.on_queued({channel for _key, _kind, channel, _payload in messages})
        return {"status": "queued", "messages": queued}
