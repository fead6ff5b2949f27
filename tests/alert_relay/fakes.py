"""Local stand-ins for the Slack Web API and FAX.PLUS's file endpoint, speaking their wire protocols.

The relay reaches them through the real slack-sdk WebClient (base_url) and a plain HTTPS-style GET,
so what they record is exactly what Slack and FAX.PLUS would have received. Faults on demand:
an outage (503 for every call) and a 429 storm (Retry-After on every call), both until a deadline.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each two-write reply waits for a delayed ACK

    def log_message(self, format, *args):
        pass

    def reply(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class FakeSlack:
    """Slack Web API: chat.postMessage, chat.update, conversations.list and the files upload v2 flow."""

    def __init__(self, token: str, channels: dict[str, str]):
        self.token = token
        self.channels = dict(channels)  # "#name" -> channel ID
        self.calls: list[Call] = []       # every successful API call, in order
        self.refused: list[Call] = []     # calls answered 429 or 503
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel ID, ts) -> message as now shown
        self.uploaded: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self.outage_until = 0.0
        self.rate_limited_until = 0.0
        self.retry_after = 1
        self.hang: dict[str, float] = {}  # method -> seconds its next call's answer is held back
        self.swallow: dict[str, float] = {}  # the same, and the call has no effect
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def start(self) -> "FakeSlack":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    def hang_next(self, method: str, seconds: float, take_effect: bool = True) -> None:
        """The next call of ``method`` takes effect (or not), but its answer comes ``seconds`` later."""
        (self.hang if take_effect else self.swallow)[method] = seconds

    def storm(self, seconds: float, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        self.rate_limited_until = time.monotonic() + seconds

    # What tests look at
    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def channel_id(self, channel: str) -> str:
        return self.channels.get(channel, channel)

    def _api(self, method: str, params: dict[str, Any], handler: _QuietHandler) -> dict[str, Any]:
        with self._lock:
            if method == "chat.postMessage":
                channel = self.channel_id(params["channel"])
                if channel not in self.channels.values():
                    return {"ok": False, "error": "channel_not_found"}
                if not params.get("text") and not params.get("blocks"):
                    return {"ok": False, "error": "no_text"}
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                if params.get("thread_ts") and (channel, params["thread_ts"]) not in self.messages:
                    return {"ok": False, "error": "thread_not_found"}
                self.messages[(channel, ts)] = dict(params)
                self.calls.append(Call(method, {**params, "channel_id": channel, "ts": ts}))
                return {"ok": True, "channel": channel, "ts": ts, "message": {"text": params.get("text"), "ts": ts}}
            if method == "chat.update":
                key = (params["channel"], params["ts"])
                if key not in self.messages:
                    return {"ok": False, "error": "message_not_found"}
                self.messages[key] = {**self.messages[key], "text": params.get("text"), "blocks": params.get("blocks")}
                self.calls.append(Call(method, dict(params)))
                return {"ok": True, "channel": params["channel"], "ts": params["ts"]}
            if method in ("conversations.history", "conversations.replies"):
                # Newest first, like Slack; history holds top-level messages, replies one thread.
                channel, oldest = params["channel"], float(params.get("oldest") or 0)
                found = []
                for (cid, ts), posted in self.messages.items():
                    if cid != channel or float(ts) < oldest:
                        continue
                    in_thread = posted.get("thread_ts")
                    if method == "conversations.history" and in_thread:
                        continue
                    if method == "conversations.replies" and ts != params["ts"] and in_thread != params["ts"]:
                        continue
                    shown = {"ts": ts, "text": posted.get("text", ""), "files": posted.get("files")}
                    if posted.get("metadata") and str(params.get("include_all_metadata")).lower() in ("1", "true"):
                        shown["metadata"] = posted["metadata"]
                    found.append(shown)
                self.calls.append(Call(method, dict(params)))
                return {"ok": True, "messages": sorted(found, key=lambda m: float(m["ts"]), reverse=True),
                        "has_more": False}
            if method == "conversations.list":
                self.calls.append(Call(method, dict(params)))
                return {"ok": True, "channels": [{"id": cid, "name": name.lstrip("#"), "is_channel": True}
                                                 for name, cid in self.channels.items()],
                        "response_metadata": {"next_cursor": ""}}
            if method == "files.getUploadURLExternal":
                file_id = f"F{next(self._ids):010d}"
                self.calls.append(Call(method, {**params, "file_id": file_id}))
                port = self.server.server_address[1]
                return {"ok": True, "file_id": file_id, "upload_url": f"http://127.0.0.1:{port}/upload/{file_id}"}
            if method == "files.completeUploadExternal":
                files = json.loads(params["files"]) if isinstance(params["files"], str) else params["files"]
                missing = [f["id"] for f in files if f["id"] not in self.uploaded]
                if missing:
                    return {"ok": False, "error": "file_not_found"}
                if params.get("channel_id") not in self.channels.values():
                    return {"ok": False, "error": "channel_not_found"}
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                # Sharing files posts a message with the comment as its text, as Slack does.
                self.messages[(params["channel_id"], ts)] = {
                    "text": params.get("initial_comment", ""), "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
                self.calls.append(Call(method, {**params, "files": files,
                                                "content": [self.uploaded[f["id"]] for f in files]}))
                return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
            return {"ok": False, "error": "unknown_method"}

    def _handler(self):
        fake = self

        class Handler(_QuietHandler):
            def do_POST(self):
                path = urlsplit(self.path).path
                raw = self.body()
                now = time.monotonic()
                if path.startswith("/upload/"):
                    with fake._lock:
                        fake.uploaded[path.rsplit("/", 1)[1]] = raw
                    self.reply(200, f"OK - {len(raw)}".encode(), "text/plain")
                    return
                method = path.removeprefix("/api/")
                if now < fake.outage_until:
                    fake.refused.append(Call(method, {"status": 503}))
                    self.reply(503, b"<html>Service Unavailable</html>", "text/html")
                    return
                if now < fake.rate_limited_until:
                    fake.refused.append(Call(method, {"status": 429}))
                    self.reply(429, b'{"ok":false,"error":"ratelimited"}', headers={"Retry-After": str(fake.retry_after)})
                    return
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self.reply(200, b'{"ok":false,"error":"invalid_auth"}')
                    return
                if method in fake.swallow:
                    fake.refused.append(Call(method, {"status": "swallowed"}))
                    time.sleep(fake.swallow.pop(method))
                    self.reply(503, b"<html>Gateway Timeout</html>", "text/html")
                    return
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("application/json"):
                    params = json.loads(raw or b"{}")
                else:
                    params = dict(parse_qsl(raw.decode()))
                params.update(dict(parse_qsl(urlsplit(self.path).query)))
                answer = json.dumps(fake._api(method, params, self)).encode()
                time.sleep(fake.hang.pop(method, 0))
                self.reply(200, answer)

            do_GET = do_POST

        return Handler


FAX_PDF_MAGIC = b"%PDF-1.4\n"


class FakeFaxPlus:
    """FAX.PLUS's `GET /v3/accounts/self/files/{file_id}?format=pdf` with a bearer token."""

    def __init__(self, token: str):
        self.token = token
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeFaxPlus":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_pdf(self, file_id: str) -> bytes:
        self.files[file_id] = FAX_PDF_MAGIC + f"fax {file_id}\n%%EOF\n".encode()
        return self.files[file_id]

    def _handler(self):
        fake = self

        class Handler(_QuietHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                fake.requests.append({"path": url.path, **query})
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self.reply(401, b'{"error":"invalid_token"}')
                    return
                prefix = "/v3/accounts/self/files/"
                file_id = url.path.removeprefix(prefix)
                if not url.path.startswith(prefix) or file_id not in fake.files or query.get("format") != "pdf":
                    self.reply(404, b'{"error":"not_found"}')
                    return
                self.reply(200, fake.files[file_id], "application/pdf")

        return Handler
