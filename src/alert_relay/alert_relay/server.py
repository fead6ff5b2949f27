"""The webhook server: Alertmanager and FAX.PLUS in, durable queue out, plus /healthz and /metrics.

Anyone who reaches the port, token or not, must not be able to stall it, so everything a peer can
make the relay hold is bounded by a RelayTuning setting: connections (`max_connections`, counted
from the accept, TLS handshakes included; at the limit a new connection pushes out one that has
not proven a credential, as service_kit.crowd.Unproven picks, else the one that has waited longest
for a request), the time to send the headers (`header_timeout_s`, a deadline for the handshake and the
whole header, however slowly they trickle),
the body (`body_timeout_s`, `max_body_bytes`), keep-alive (`idle_timeout_s`,
`keepalive_max_requests`), the header size (`max_header_bytes`) and reading our answer
(`send_timeout_s`).

HTTP/1.1 is parsed by h11 (python-hyper's sans-IO parser, the one uvicorn and httpx use); the
connection's life is an asyncio.Protocol here, so an idle connection costs a few kilobytes and a
timer, not a thread. uvicorn was not enough as is: its only timer is the keep-alive one, reset by
every byte received, so nothing bounds how long a request may take to arrive (see
xorbitsai/inference#5213, which wraps uvicorn's protocol for the same reason). Parsing, validation
and the SQLite commit run in a few worker threads (WORKER_THREADS), so an fsync never stalls other
connections.

Malformed input of any kind (HTTP framing, JSON, nesting, numbers, lone surrogates, types) is a 4xx
with its reason in the body and one log line; nothing that cannot be encoded as UTF-8 is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

import h11
from pprof_sampler import PATH as PROFILE_PATH
from pprof_sampler.allocations import PATH as ALLOCATIONS_PATH
from pprof_sampler.allocations import AllocationEndpoint
from pprof_sampler import ProfileEndpoint, Sampler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from service_kit.crowd import Unproven
from service_kit.listen import tcp_listener

from alert_relay import metrics
from alert_relay.config import RelayTuning
from alert_relay.routes import SlackRoutes, e164
from alert_relay.store import Store, describe_error, write_error_cause
from alert_relay.web import WebConfig

log = logging.getLogger("alert_relay")

# Threads that parse, validate and queue requests and answer /healthz and /metrics.
WORKER_THREADS = 4
# The listen backlog: it absorbs Alertmanager's burst of connections after an outage.
LISTEN_BACKLOG = 1024
# After a failed accept (out of descriptors), wait this long before accepting again (as asyncio does).
ACCEPT_RETRY_S = 1.0
# JSON nesting: Alertmanager's and FAX.PLUS's payloads are 4 levels deep at most.
MAX_JSON_DEPTH = 32
# Digits of a JSON integer: ids and page counts fit in 20.
MAX_INTEGER_DIGITS = 20
MAX_FAX_PAGES = 100_000


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
    pages: int | None = Field(None, ge=0, le=MAX_FAX_PAGES)
    start_time: str = ""
    file: str
    file_name: str = ""
    status: str = ""


class FaxWebhook(Lenient):
    hook: FaxHook
    data: FaxData


def _too_many_digits(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BadRequest(f"malformed JSON: an integer of {len(text.lstrip('-'))} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def _not_a_number(name: str) -> Any:
    raise BadRequest(f"malformed JSON: {name} is not a JSON number")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where the first string (key or value) with a lone surrogate is, as a dotted path."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{where or 'body'} (\\u{ord(item[exc.start]):04x} at character {exc.start})"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{where}.{key}" if where else str(key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return f"a key in {where or 'the body'}"
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{n}" if where else str(n)) for n, child in reversed(list(enumerate(item))))
    return None


def parse_json(body: bytes) -> Any:
    """The body as JSON, or BadRequest: not UTF-8, not JSON, nested deeper than MAX_JSON_DEPTH,
    integers over MAX_INTEGER_DIGITS, NaN/Infinity, or a string with a lone surrogate (valid JSON
    escapes such as \\ud800 that no UTF-8 text, and so no Slack message, can carry)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"malformed JSON: the body is not UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_int=_too_many_digits, parse_constant=_not_a_number)
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if _depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{_surrogate_path(payload)}: a lone surrogate: expected valid Unicode text") from None
    return payload


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




@dataclass
class Reply:
    status: int
    body: dict[str, Any] | bytes
    content_type: str = "application/json"
    close: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Intake:
    """What the requests mean: tokens, routes, the queue. Runs in the worker threads."""

    def __init__(self, *, store: Store, routes: SlackRoutes, on_queued: Callable[[set[str]], None],
                 alertmanager_token: str, fax_token: str, worker_problem: Callable[[], str | None]):
        self.store, self.routes, self.on_queued = store, routes, on_queued
        self.alertmanager_token, self.fax_token = alertmanager_token.encode(), fax_token.encode()
        self.worker_problem = worker_problem

    def authorized(self, path: str, headers: dict[bytes, bytes]) -> Reply | None:
        """None when a POST's credentials are right, else the 401 (decided before any body is read)."""
        if path == "/alertmanager":
            given = headers.get(b"authorization", b"")
            if hmac.compare_digest(given, b"Bearer " + self.alertmanager_token):
                return None
            return refuse(401, "missing or wrong bearer token", "unauthorized", path, close=True)
        if hmac.compare_digest(path[len("/fax/"):].encode(), self.fax_token):
            return None
        return refuse(401, "wrong webhook token", "unauthorized", path, close=True)

    def post(self, path: str, body: bytes, started: float) -> Reply:
        try:
            payload = parse_json(body)
            answer = self._alertmanager(payload) if path == "/alertmanager" else self._fax(payload)
        except BadRequest as exc:
            return refuse(400, str(exc), "malformed" if str(exc).startswith("malformed") else "invalid", path)
        except sqlite3.Error as exc:
            # Not queued: a 5xx makes Alertmanager and FAX.PLUS retry later.
            cause = describe_error(exc)
            log.error("cannot queue", extra={"fields": {"error": cause, "cause": write_error_cause(exc)}})
            return Reply(503, {"error": f"cannot queue: {cause}"})
        metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        return Reply(200, answer)

    def healthz(self) -> Reply:
        problem = self.store.writable()
        if problem:
            return Reply(503, {"status": "queue not writable", "error": problem})
        problem = self.worker_problem()
        if problem:
            return Reply(503, {"status": "not delivering", "error": problem})
        return Reply(200, {"status": "ok"})

    def _alertmanager(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or payload.get("version") != "4":
            version = payload.get("version") if isinstance(payload, dict) else None
            raise BadRequest(f"unknown payload version {str(version)[:20]!r}: expected Alertmanager webhook version \"4\"")
        try:
            note = AlertmanagerNotification.model_validate(payload)
        except ValidationError as exc:
            raise BadRequest(f"invalid Alertmanager notification: {_reason(exc)}") from None
        return self._queue("alert", alert_messages(note, self.routes))

    def _fax(self, payload: Any) -> dict[str, Any]:
        try:
            hook = FaxWebhook.model_validate(payload)
        except ValidationError as exc:
            raise BadRequest(f"invalid FAX.PLUS webhook: {_reason(exc)}") from None
        if hook.hook.event != "fax_received":
            log.info("fax event ignored", extra={"fields": {"event": hook.hook.event[:100], "fax_id": str(hook.data.id)}})
            return {"status": "ignored"}
        channel = self.routes.fax_channel(hook.data.sender)
        if channel is None:
            metrics.DROPPED_FAXES.inc()
            log.info("fax dropped: sender not listed in routes", extra={"fields": {
                "sender": e164(hook.data.sender)[:40], "fax_id": str(hook.data.id)}})
            return {"status": "dropped"}
        return self._queue("fax", fax_message(hook, channel))

    def _queue(self, kind: str, messages: list[tuple[str, str, str, dict]]) -> dict[str, Any]:
        queued = self.store.enqueue(messages)
        if not queued:
            metrics.DUPLICATES.labels(kind).inc()
            return {"status": "duplicate"}
        metrics.ACCEPTED.labels(kind).inc()
        self.on_queued({channel for _key, _kind, channel, _payload in messages})
        return {"status": "queued", "messages": queued}


def shown_path(path: str) -> str:
    """A request path fit for logs: the fax webhook's token is in its path."""
    return "/fax/…" if path.startswith("/fax/") else path[:100]


def refuse(status: int, reason: str, metric_reason: str, path: str, client: str = "", close: bool = False) -> Reply:
    """A 4xx with its reason, counted and logged once."""
    reason = reason[:300]
    metrics.REJECTED.labels(metric_reason).inc()
    log.warning("request refused", extra={"fields": {"status": status, "path": shown_path(path), "reason": reason,
                                                      **({"client": client} if client else {})}})
    return Reply(status, {"error": reason}, close=close)


def raw_reply(status: int, reason: str) -> bytes:
    """An answer written outside h11's state machine, just before the connection is closed."""
    body = (json.dumps({"error": reason}) + "\n").encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


class Phase:
    WAITING = "waiting"  # for a request (fresh, keep-alive, or its headers trickling in): evictable
    BODY = "body"        # headers read, body arriving
    HANDLING = "handling"
    SENDING = "sending"  # our answer is not yet taken by the peer
    LINGERING = "lingering"  # answered and closing: the rest of the peer's request is read and dropped


class HttpConnection(asyncio.Protocol):
    """One client connection: h11 parses, this enforces the phase deadlines and answers."""

    def __init__(self, server: RelayServer, sock: socket.socket, client: str):
        self.server = server
        self.tuning = server.tuning
        self.client = client
        # Headers (and before them, the TLS handshake) are due header_timeout_s after the accept.
        self.header_deadline = asyncio.get_running_loop().time() + self.tuning.header_timeout_s
        self.transport: asyncio.Transport | None = None
        self.socket = sock  # the accepted socket, ours until connect() hands it to the transport
        self.handshake: asyncio.Task | None = None  # connect(), the TLS handshake in it
        self.connecting = False
        self.handler: asyncio.Task | None = None  # answering a request
        self.checking_login = False
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.tuning.max_header_bytes)
        self.phase = Phase.WAITING
        self.keepalive_wait = False  # waiting between requests, no byte of the next one yet
        self.timer: asyncio.TimerHandle | None = None
        self.method = b""
        self.path = ""
        self.query = ""
        self.authorization: bytes | None = None
        self.body = bytearray()
        self.eof = False
        self.started = 0.0
        self.served = 0
        self.closing = False
        self.write_paused = False
        self.after_send: Callable[[], None] | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Pause as soon as anything is left unsent: a peer that does not read is timed out
        # instead of growing our buffer with pipelined answers. high=1, not 0: asyncio's TLS
        # transport pauses when its buffer holds >= high bytes (sslproto._control_app_writing), so
        # 0 paused after every answer, even one sent whole, and resumed only on the next socket
        # event: a kept-alive connection's next request then waited for the client's timeout.
        self.transport.set_write_buffer_limits(high=1)
        if self.closing:  # pushed out as its handshake ended
            self.transport.abort()
            return
        self.phase = Phase.WAITING
        self.server.waiting(self)
        self._arm(max(0.0, self.header_deadline - asyncio.get_running_loop().time()), "header_timeout")

    async def connect(self) -> None:
        """Make the accepted socket this connection's transport, after the TLS handshake if any."""
        self.connecting = True
        sock = self.socket
        loop = asyncio.get_running_loop()
        web = self.server.web
        try:
            await loop.connect_accepted_socket(lambda: self, sock, **(
                {"ssl": web.tls.current(), "ssl_handshake_timeout": self.tuning.header_timeout_s} if web else {}))
        except (OSError, asyncio.TimeoutError):
            pass  # a failed or late handshake: dropped (ssl.SSLError is an OSError)
        except asyncio.CancelledError:
            # Pushed out or stopping: the transport being built owns the descriptor and closes it
            # once the connection is down, which this makes it at once.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        finally:
            self.handshake = None
            if self.transport is None:
                self.closing = True
                self.server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.phase == Phase.LINGERING:
            return
        if self.phase == Phase.HANDLING:  # read during a login check only to see the peer leave
            self.h11.receive_data(data)  # kept for after the answer, one read at most
            self.transport.pause_reading()
            return
        if self.keepalive_wait:
            self.keepalive_wait = False
            self._arm(self.tuning.header_timeout_s, "header_timeout")
        self.h11.receive_data(data)
        self._advance()

    def eof_received(self) -> bool | None:
        if self.phase == Phase.LINGERING:
            self._close()
            return None
        self.eof = True
        self.h11.receive_data(b"")
        self._advance()
        # Keep our side open until the answer to a complete request is written; TLS has no half-close.
        return None if self.server.web else True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self._mid_request():
            log.debug("peer disconnected mid-request", extra={"fields": {"phase": self.phase, "client": self.client}})
        self.closing = True
        self._cancel_timer()
        self._cancel_login_check()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.phase == Phase.SENDING and self.after_send:
            after, self.after_send = self.after_send, None
            after()

    # phases

    def _mid_request(self) -> bool:
        if self.phase in (Phase.BODY, Phase.HANDLING, Phase.SENDING):
            return True
        return self.phase == Phase.WAITING and self._peer_sending()

    def _peer_sending(self) -> bool:
        """The peer has begun a request it has not finished sending."""
        return self.h11.their_state in (h11.SEND_BODY, h11.ERROR) or bool(self.h11.trailing_data[0])

    def _advance(self) -> None:
        while self.phase in (Phase.WAITING, Phase.BODY) and not self.closing:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self.eof:  # the peer hung up mid-request: nobody to answer
                    log.debug("peer disconnected mid-request", extra={"fields": {"phase": self.phase, "client": self.client}})
                    self._close()
                    return
                self._send(refuse(exc.error_status_hint, f"malformed HTTP request: {exc}", "malformed_http",
                                  self.path, self.client, close=True))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self.body += event.data  # h11 stops at the Content-Length, checked against max_body_bytes
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()

    def _on_request(self, request: h11.Request) -> None:
        self.server.busy(self)
        self.started = time.perf_counter()
        self.path, _, self.query = request.target.decode("latin-1").partition("?")
        self.method = request.method
        self.body = bytearray()
        headers = dict(request.headers)
        self.authorization = headers.get(b"authorization")
        # h11 bounds a header still arriving; one that came whole in a single read is measured here.
        size = len(request.method) + len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
        if size > self.tuning.max_header_bytes:
            self._send(refuse(431, f"request header over max_header_bytes {self.tuning.max_header_bytes}",
                              "malformed_http", self.path, self.client, close=True))
            return
        if request.method == b"GET":
            if b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0":
                self._send(refuse(400, "a GET request has no body", "malformed_http", self.path, self.client, close=True))
                return
            self.phase = Phase.BODY
            self._arm(self.tuning.body_timeout_s, "body_timeout")
            return
        if request.method != b"POST" or not (self.path == "/alertmanager" or self.path.startswith("/fax/")):
            status = 405 if self.path in ("/healthz", "/metrics", "/alertmanager") or self.path.startswith("/fax/") else 404
            self._send(Reply(status, {"error": "method not allowed" if status == 405 else "not found"}, close=True))
            return
        refused = self.server.intake.authorized(self.path, headers)
        if refused:
            self._send(refused)
            return
        self.server.trust(self)
        if b"transfer-encoding" in headers or b"content-length" not in headers:
            self._send(refuse(411, "a Content-Length header is required", "no_length", self.path, self.client, close=True))
            return
        length = int(headers[b"content-length"])  # h11 has checked it is digits
        if length > self.tuning.max_body_bytes:
            self._send(refuse(413, f"body of {length} bytes exceeds max_body_bytes {self.tuning.max_body_bytes}",
                              "too_large", self.path, self.client, close=True))
            return
        if self.h11.they_are_waiting_for_100_continue:
            self.transport.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        self.phase = Phase.BODY
        self._arm(self.tuning.body_timeout_s, "body_timeout")

    def _dispatch(self) -> None:
        self.phase = Phase.HANDLING
        self._cancel_timer()
        self.transport.pause_reading()
        self.handler = self.server.spawn(self._handle())

    async def _logged_in(self) -> bool | None:
        """Whether the request's login matches (bcrypt in its turn, service_kit.crowd.Unproven meanwhile);
        None when no answer came within header_timeout_s."""
        logins = self.server.web.logins
        if logins.remembered(self.authorization):
            self.server.trust(self)
            return True
        self.checking_login = True
        self.transport.resume_reading()  # a peer hanging up is seen, and its check cancelled
        try:
            allowed = await asyncio.wait_for(logins.allow(self.authorization, self.client), self.tuning.header_timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self.checking_login = False
            if not self.closing:
                self.transport.pause_reading()
        if allowed:
            self.server.trust(self)
        return allowed

    def _cancel_login_check(self) -> None:
        """A connection gone while its login waits for bcrypt: the check is dropped."""
        if self.checking_login and self.handler is not None:
            self.handler.cancel()

    async def _handle(self) -> None:
        intake = self.server.intake
        try:
            allowed = True if self.method != b"GET" or not self.server.web else await self._logged_in()
            if allowed is None:
                reply = refuse(503, "too many logins to check: retry", "login_busy", self.path, self.client, close=True)
                reply.headers = ((b"retry-after", b"1"),)
            elif not allowed:
                reply = refuse(401, "log in to read /healthz and /metrics", "unauthorized", self.path, self.client)
                reply.headers = ((b"www-authenticate", b'Basic realm="alert-relay"'),)
            elif self.method == b"GET":
                if self.path == "/healthz":
                    reply = await self.server.in_thread(intake.healthz)
                elif self.path == "/metrics":
                    reply = Reply(200, await self.server.in_thread(generate_latest), CONTENT_TYPE_LATEST)
                elif self.path == PROFILE_PATH and self.server.profiles:
                    reply = Reply(*await self.server.profiles.answer(self.query))
                elif self.path == ALLOCATIONS_PATH and self.server.allocations:
                    reply = Reply(*await self.server.allocations.answer(self.query))
                else:
                    reply = Reply(404, {"error": "not found"})
            else:
                reply = await self.server.in_thread(intake.post, self.path, bytes(self.body), self.started)
        except asyncio.CancelledError:
            return  # the connection is gone (its login check cancelled) or the relay stops
        except Exception as exc:  # a bug must cost one request, not the connection's silence
            log.exception("request handler error", extra={"fields": {"path": shown_path(self.path)}})
            reply = Reply(500, {"error": f"internal error: {type(exc).__name__}"}, close=True)
        self.body = bytearray()
        if not self.closing:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        self._cancel_timer()
        self.served += 1
        data = reply.body if isinstance(reply.body, bytes) else (json.dumps(reply.body) + "\n").encode()
        close = (reply.close or self.served >= self.tuning.keepalive_max_requests or self.server.stopping
                 or self.h11.their_state is not h11.DONE)
        headers = [(b"content-type", reply.content_type.encode()), (b"content-length", str(len(data)).encode()),
                   (b"server", b"alert-relay"), *reply.headers]
        if close:
            headers.append((b"connection", b"close"))
        out = self.h11.send(h11.Response(status_code=reply.status, headers=headers,
                                         reason=HTTPStatus(reply.status).phrase.encode()))
        out += self.h11.send(h11.Data(data=data)) + self.h11.send(h11.EndOfMessage())
        self.transport.write(out)
        next_step = self._linger if close or self.h11.our_state is h11.MUST_CLOSE else self._next_request
        if self.write_paused:
            self.phase = Phase.SENDING
            self.transport.pause_reading()  # nothing more is parsed until the peer takes this answer
            self.after_send = next_step
            self._arm(self.tuning.send_timeout_s, "send_timeout")
        else:
            next_step()

    def _next_request(self) -> None:
        self.h11.start_next_cycle()
        self.keepalive_wait = not self.h11.trailing_data[0]  # else the next request has begun
        self._wait(self.tuning.idle_timeout_s)
        self.transport.resume_reading()
        self._advance()  # a pipelined request may be buffered already

    def _wait(self, timeout: float) -> None:
        self.phase = Phase.WAITING
        self.server.waiting(self)
        self._arm(timeout, "idle_timeout" if self.keepalive_wait else "header_timeout")

    def _linger(self) -> None:
        """Close after the answer, reading (and dropping) what the peer still sends meanwhile, so
        that our close does not reset the connection before the peer has read the answer."""
        if self.closing:
            return
        if self.eof or not self._peer_sending():
            self._close()
            return
        self.phase = Phase.LINGERING
        self.server.waiting(self)
        self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(self.tuning.send_timeout_s, None)

    def _arm(self, timeout: float, reason: str | None) -> None:
        self._cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(timeout, self._expired, reason)

    def _cancel_timer(self) -> None:
        if self.timer:
            self.timer.cancel()
            self.timer = None

    def _expired(self, reason: str | None) -> None:
        self.timer = None
        if reason:
            metrics.HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
            log.debug("connection timed out", extra={"fields": {"reason": reason, "client": self.client}})
            if reason in ("header_timeout", "body_timeout") and self._mid_request():
                self.transport.write(raw_reply(408, reason.replace("_", " ")))
        # After send_timeout or lingering, what is left unsent will not be read: drop it.
        self._close(abort=reason in ("send_timeout", None))

    def evict(self) -> None:
        metrics.HTTP_CONNECTIONS_CLOSED.labels("evicted").inc()
        log.debug("connection evicted", extra={"fields": {"client": self.client}})
        self._close(abort=True)

    def _close(self, abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_timer()
        self._cancel_login_check()
        self.server.forget(self)
        if self.transport is None:  # in its handshake
            if not self.connecting:  # connect() has not begun, and never will: the socket is still ours
                self.socket.close()
            self.handshake.cancel()
        elif abort:
            self.transport.abort()
        else:
            self.transport.close()


class RelayServer:
    """The listening socket and its connections: the cap, who makes room, in-flight handlers, shutdown."""

    def __init__(self, tuning: RelayTuning, intake: Intake, web: WebConfig | None = None):
        # With ``web`` (web_config_file): TLS only, and a login for GET requests (alert_relay.web).
        self.tuning, self.intake, self.web = tuning, intake, web
        self.connections: set[HttpConnection] = set()
        # Connections without a request under way, longest waiting first (dicts keep insertion order).
        self.idle: dict[HttpConnection, None] = {}
        # Connections that have not shown a right credential yet, by peer address: the first to make room.
        self.unproven = Unproven()
        self.tasks: set[asyncio.Task] = set()
        self.executor = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="intake")
        self.stopping = False
        # Continuous profiling (profiling_hz; RelayConfig refuses it without web_config_file's logins).
        self.profiles = ProfileEndpoint(Sampler(tuning.profiling_hz)) if tuning.profiling_hz else None
        # The allocation view (`homelab profile --memory`), traced only while a logged-in GET asks.
        self.allocations: AllocationEndpoint | None = None
        self.listener: socket.socket | None = None
        self.accepting: asyncio.Task | None = None
        if web:
            metrics.LOGIN_CHECKS.set_function(web.logins.pending)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; each connection counts against max_connections from its accept, before its
        TLS handshake (asyncio's own server would hold any number of handshakes, uncounted)."""
        if self.profiles:  # first: a process whose SIGPROF is taken (SigprofTaken) opens nothing
            self.profiles.sampler.start()
        self.listener = tcp_listener(host, port, LISTEN_BACKLOG)
        self.accepting = asyncio.get_running_loop().create_task(self._accept())
        if self.web:
            self.allocations = AllocationEndpoint()
        return self.listener.getsockname()[:2]

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self.listener)
            except OSError:
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if not self.make_room():
                metrics.HTTP_CONNECTIONS_CLOSED.labels("over_limit").inc()
                log.warning("connection refused: max_connections reached",
                            extra={"fields": {"max_connections": self.tuning.max_connections, "client": peer[0]}})
                if not self.web:  # over TLS there is no session to answer in
                    with contextlib.suppress(OSError):
                        sock.send(raw_reply(503, "too many connections"))
                sock.close()
                continue
            connection = HttpConnection(self, sock, peer[0])
            self.connections.add(connection)
            self.unproven.add(connection.client, connection)
            metrics.HTTP_CONNECTIONS.set(len(self.connections))
            connection.handshake = self.spawn(connection.connect())

    def make_room(self) -> bool:
        """Whether a new connection fits under max_connections. At the limit, one that has not
        proven a credential makes room (service_kit.crowd.Unproven picks which), else the one that has
        waited longest for a request; with every connection inside a request, there is no room."""
        if len(self.connections) < self.tuning.max_connections:
            return True
        pushed_out = self.unproven.push_out()
        if pushed_out is not None:
            pushed_out[1].evict()
        elif self.idle:
            next(iter(self.idle)).evict()
        else:
            return False
        return True

    def trust(self, connection: HttpConnection) -> None:
        """The connection showed a right credential: only its own deadlines end it from now on."""
        self.unproven.discard(connection.client, connection)

    def waiting(self, connection: HttpConnection) -> None:
        self.idle.pop(connection, None)
        self.idle[connection] = None

    def busy(self, connection: HttpConnection) -> None:
        self.idle.pop(connection, None)

    def forget(self, connection: HttpConnection) -> None:
        self.idle.pop(connection, None)
        self.unproven.discard(connection.client, connection)
        if connection in self.connections:
            self.connections.discard(connection)
            metrics.HTTP_CONNECTIONS.set(len(self.connections))

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)

    async def in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop listening, close idle connections, let requests under way finish (up to grace_s)."""
        self.stopping = True
        if self.allocations:
            self.allocations.close()
        if self.accepting:
            self.accepting.cancel()
        if self.listener:
            self.listener.close()
        for connection in list(self.idle) + [c for c in self.connections if c.transport is None or c.checking_login]:
            connection._close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        for connection in list(self.connections):
            connection._close()
        self.executor.shutdown(wait=True)
        if self.web:
            self.web.logins.close()
        if self.profiles:
            self.profiles.sampler.stop()
            self.profiles.close()
