"""Hostile HTTP against a real relay process on loopback: malformed input of every kind, slow and
idle peers, thousands of held connections. Bounds come from the relay's RelayTuning and server.py."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from alert_relay.config import RelayTuning
from alert_relay.server import MAX_INTEGER_DIGITS, MAX_JSON_DEPTH, WORKER_THREADS
from tests.alert_relay.conftest import AM_TOKEN, FAX_HOOK_TOKEN, fax_webhook, notification, wait_for

DEFAULTS = RelayTuning()


def exchange(url: str, raw: bytes, timeout: float = 10.0, shut: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; everything the relay answers until it closes (or timeout)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else {}


def post_raw(path: str, body: bytes, token: str = AM_TOKEN, extra: bytes = b"") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n".encode() if path == "/alertmanager" else b""
    return (f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n".encode() + auth + extra
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def alert_with(**changes) -> dict:
    payload = notification("Hostile")
    alert = payload["alerts"][0]
    for key, value in changes.items():
        target = alert if key in alert else payload
        target[key] = value
    return payload


def dumps(payload) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes: exactly what an attacker sends.
    return json.dumps(payload).encode()


def queued_count(relay) -> int:
    with sqlite3.connect(relay.config["queue_path"]) as db:
        return db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]


def refusals(relay) -> list[dict]:
    return [event for event in relay.events() if event["event"] == "request refused"]


def assert_no_traceback(relay) -> None:
    for event in relay.events():
        assert event["event"] != "unparsed" and "exception" not in event, event


MALFORMED = {
    "deep nesting": ("/alertmanager", b"[" * 30_000 + b"]" * 30_000, 400, "nested deeper"),
    "nesting past the JSON depth": ("/alertmanager", dumps(alert_with(
        annotations=json.loads("[" * (MAX_JSON_DEPTH + 5) + "]" * (MAX_JSON_DEPTH + 5)))), 400, "nested deeper"),
    "5000-digit integer": ("/alertmanager", b'{"version": "4", "truncatedAlerts": ' + b"9" * 5000 + b"}", 400, "digits"),
    "integer one digit too long": ("/fax/" + FAX_HOOK_TOKEN, dumps(fax_webhook("f1", pages=10 ** MAX_INTEGER_DIGITS)), 400, "digits"),
    "NaN": ("/alertmanager", b'{"version": "4", "x": NaN}', 400, "NaN"),
    "lone surrogate in a label value": ("/alertmanager", dumps(alert_with(labels={"alertname": "A", "x": "\ud800"})),
                                        400, "alerts.0.labels.x"),
    "lone surrogate in groupKey": ("/alertmanager", dumps(alert_with(groupKey="{}:{a=\"\udfff\"}")), 400, "groupKey"),
    "lone surrogate in a label name": ("/alertmanager", dumps(alert_with(labels={"alertname": "A", "\ud83d": "v"})),
                                       400, "surrogate"),
    "lone surrogate in a fax sender": ("/fax/" + FAX_HOOK_TOKEN, dumps(fax_webhook("f2", sender="+1555\udc00")),
                                       400, "data.from"),
    "labels of the wrong type": ("/alertmanager", dumps(alert_with(labels=["alertname", "A"])), 400, "labels"),
    "a label value that is a number": ("/alertmanager", dumps(alert_with(labels={"alertname": 5})), 400, "alertname"),
    "alerts as a string": ("/alertmanager", dumps(alert_with(alerts="many")), 400, "alerts"),
    "negative fax pages": ("/fax/" + FAX_HOOK_TOKEN, dumps(fax_webhook("f3", pages=-1)), 400, "pages"),
    "not JSON": ("/alertmanager", b"version=4", 400, "malformed JSON"),
    "not UTF-8": ("/alertmanager", b'{"version": "4", "groupKey": "\xff\xfe"}', 400, "not UTF-8"),
    "a JSON list": ("/alertmanager", b"[]", 400, "payload version"),
}


@pytest.mark.parametrize("path, body, status, reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_payload_is_one_4xx_with_its_reason_and_one_log_line(relay, path, body, status, reason):
    answer = exchange(relay.url, post_raw(path, body))
    got_status, got = status_and_body(answer)
    assert got_status == status, answer[:300]
    assert reason in got["error"]
    assert len(refusals(relay)) == 1 and reason in refusals(relay)[0]["reason"]
    assert queued_count(relay) == 0
    assert_no_traceback(relay)
    # and the relay goes on taking good alerts
    assert relay.post_alerts(notification("AfterHostile")).json()["status"] == "queued"


MALFORMED_HTTP = {
    "bad Content-Length": (b"POST /alertmanager HTTP/1.1\r\nHost: r\r\nContent-Length: 12x\r\n\r\n", 400),
    "conflicting Content-Lengths": (b"POST /alertmanager HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    "no Content-Length": (f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\n\r\n".encode(), 411),
    "chunked body": (f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".encode(), 411),
    "body over max_body_bytes": (post_raw("/alertmanager", b" " * 70_000), 413),
    "headers over max_header_bytes": (b"GET /healthz HTTP/1.1\r\nHost: r\r\nX-Pad: " + b"a" * DEFAULTS.max_header_bytes
                                      + b"\r\n\r\n", 431),
    "garbage request line": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    "a GET with a body": (b"GET /healthz HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nhello", 400),
    "wrong token": (post_raw("/alertmanager", dumps(notification("A")), token="guess"), 401),
}


@pytest.mark.parametrize("raw, status", MALFORMED_HTTP.values(), ids=MALFORMED_HTTP.keys())
def test_malformed_http_is_one_4xx_with_its_reason_and_one_log_line(relay, raw, status):
    got_status, got = status_and_body(exchange(relay.url, raw))
    assert got_status == status and got["error"]
    assert len(refusals(relay)) == 1
    assert queued_count(relay) == 0
    assert_no_traceback(relay)
    assert requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200


def test_peer_hanging_up_mid_request_logs_nothing_at_info(relay):
    before = len(relay.events())
    head = f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    for raw in (b"POST /alertm", head.encode(), head.encode() + b'{"version": '):
        assert exchange(relay.url, raw, shut=True) == b""
    time.sleep(0.3)
    assert relay.events()[before:] == []
    assert queued_count(relay) == 0


def test_slow_peers_are_cut_off_at_their_deadlines(make_relay):
    relay = make_relay(header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=1.5, keepalive_max_requests=3)
    host, port = relay.url.removeprefix("http://").split(":")

    def held_for(send) -> tuple[float, bytes]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            started = time.monotonic()
            send(sock)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return time.monotonic() - started, received

    def trickle_headers(sock):  # slowloris: a header byte every 0.2 s never completes the request
        for byte in b"POST /alertmanager HTTP/1.1\r\nHost: relay\r\nX-Slow: " + b"a" * 100:
            try:
                sock.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    held, answer = held_for(trickle_headers)
    assert 0.9 <= held < 3 and status_and_body(answer)[0] == 408
    held, answer = held_for(lambda sock: None)  # connects and says nothing
    assert 0.9 <= held < 3 and answer == b""
    head = f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
    held, answer = held_for(lambda sock: sock.sendall(head.encode()))
    assert 0.9 <= held < 3 and status_and_body(answer)[0] == 408

    # keep-alive: idle_timeout between requests, at most keepalive_max_requests on one connection
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{relay.url}/healthz", timeout=5).status_code == 200
        answers = [session.get(f"{relay.url}/healthz", timeout=5) for _ in range(3)]
        assert [a.headers.get("Connection") for a in answers] == [None, None, "close"]
    get = b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n"
    held, answer = held_for(lambda sock: sock.sendall(get))
    assert answer.count(b"HTTP/1.1 200") == 1 and 1.4 <= held < 3.5
    assert relay.metric("alert_relay_http_connections_closed_total", 'reason="header_timeout"') >= 2
    assert relay.metric("alert_relay_http_connections_closed_total", 'reason="body_timeout"') >= 1
    assert_no_traceback(relay)


def process_status(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}


def hold_connections(url: str, count: int) -> list[socket.socket]:
    """``count`` connections: a third say nothing, a third sent half a header, a third a header and
    half a body (with the right token: the relay waits for the body)."""
    host, port = url.removeprefix("http://").split(":")
    partial = [b"", b"POST /alertmanager HTTP/1.1\r\nHost: relay\r\nX-Slow: aaaa",
               f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\n"
               f"Content-Length: 100000\r\n\r\n{{\"version\"".encode()]
    held = []
    for n in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        if partial[n % 3]:
            sock.sendall(partial[n % 3])
        held.append(sock)
    return held


@pytest.mark.slow
@pytest.mark.parametrize("max_connections", [DEFAULTS.max_connections, 1000], ids=["under the cap", "over the cap"])
def test_thousands_of_idle_connections_do_not_delay_alerts(make_relay, max_connections):
    """3000 connections held open (idle, half a header, half a body) while 100 alerts are posted:
    each alert answered within 1 s, memory and threads bounded. Over max_connections, the
    longest-waiting idle connections make room."""
    relay = make_relay(max_connections=max_connections, header_timeout_s=60, body_timeout_s=60)
    pid = relay.process.pid
    assert requests.get(f"{relay.url}/healthz", timeout=5).status_code == 200
    before = process_status(pid)
    held = hold_connections(relay.url, 3000)
    try:
        wait_for(lambda: relay.metric("alert_relay_http_connections") >= min(max_connections, 3000) - 1, 20,
                 "the relay to take the connections")
        latencies, statuses = [], []
        session = requests.Session()
        for n in range(100):
            started = time.monotonic()
            # half on a kept-alive connection, half on fresh ones
            post = session.post if n % 2 else requests.post
            answer = post(f"{relay.url}/alertmanager", json=notification(f"Legit{n}"), timeout=5,
                          headers={"Authorization": f"Bearer {AM_TOKEN}"})
            latencies.append(time.monotonic() - started)
            statuses.append(answer.status_code)
        session.close()
        health = requests.get(f"{relay.url}/healthz", timeout=5).status_code
        during = process_status(pid)
    finally:
        for sock in held:
            sock.close()
    assert statuses == [200] * 100 and health == 200
    assert max(latencies) < 1.0, f"slowest alert answered in {max(latencies):.3f} s"
    assert during["rss_kb"] - before["rss_kb"] < 30 * 1024
    # main loop, delivery worker, the intake threads, and a few library threads at most
    assert during["threads"] <= WORKER_THREADS + 4
    assert queued_count(relay) == 100
    if max_connections < 3000:
        assert relay.metric("alert_relay_http_connections_closed_total", 'reason="evicted"') >= 3000 - max_connections
    assert_no_traceback(relay)
