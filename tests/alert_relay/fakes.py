"""Strict local stand-ins for Slack's Web API and FAX.PLUS's REST API.

The relay reaches them only through slack-sdk's WebClient(base_url=...) and its faxplus_base_url,
so what they record is exactly what Slack and FAX.PLUS would have received. They refuse what the
real services refuse, with the real error codes and answer shapes; each rule names its source:

  [postMessage]  docs.slack.dev/reference/methods/chat.postMessage (arguments, errors)
  [update]       docs.slack.dev/reference/methods/chat.update
  [history]      docs.slack.dev/reference/methods/conversations.history, .replies
  [list]         docs.slack.dev/reference/methods/conversations.list, conversations.info
  [authtest]     docs.slack.dev/reference/methods/auth.test
  [upload]       docs.slack.dev/messaging/working-with-files (files.getUploadURLExternal,
                 files.completeUploadExternal; the share is processed asynchronously)
  [blocks]       docs.slack.dev/reference/block-kit/blocks (50 blocks, section text 3000,
                 header 150, context 10 elements)
  [total]        slackapi/bolt-js #2509 and #2867: msg_blocks_too_long for blocks totalling about
                 12,000 characters of text, each block under its own limit
  [errors]       the "common errors" every method lists: invalid_auth, not_authed, token_revoked,
                 account_inactive, missing_scope (with "needed" and "provided"), fatal_error
                 ("It's possible some aspect of the operation succeeded")
  [ratelimits]   docs.slack.dev/apis/web-api/rate-limits: HTTP 429 with Retry-After; chat.postMessage
                 allows about one message per second per channel; its error table also lists
                 rate_limited answered with HTTP 200
  [scopes]       each method's "Required scopes"; Slack reports granted scopes in X-OAuth-Scopes
  [sdk]          slack-sdk's WebClient: form- or JSON-encoded bodies, Authorization: Bearer
  [faxplus]      apidoc.fax.plus (v3): base https://restapi.fax.plus/v3; GET /accounts/{user_id}
                 (user_id "self"; scopes fax:all:read, fax:member:read, fax:user:read);
                 GET /accounts/{user_id}/files/{fax_id}?format=pdf|tiff (path parameter fax_id;
                 scope fax:fax:read or fax:all:read); the fax record's "file" is described as
                 "Fax file ID for the getFile handle", its webhook docs pass data.id
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
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


class SlackLimits:
    """Block Kit and message limits, as Slack enforces them on chat.postMessage and chat.update."""

    BLOCKS = 50                # [blocks] "maximum of 50 blocks in each message"
    SECTION_TEXT = 3000        # [blocks] section text "Maximum length ... 3000 characters"
    HEADER_TEXT = 150          # [blocks] header text "Maximum length ... 150 characters"
    CONTEXT_ELEMENTS = 10      # [blocks] context "Maximum number of items is 10"
    TOTAL_BLOCK_TEXT = 12_000  # [total] maintainers: "12,000 text characters with a buffer"
    MESSAGE_TEXT = 40_000      # [postMessage] msg_too_long past 40,000 characters

    @classmethod
    def check_message(cls, text: Any, blocks: Any) -> str | None:
        """The error code Slack answers for this text and blocks, or None if it takes them."""
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                return "invalid_blocks_format"
        if not text and not blocks:
            return "no_text"  # [postMessage]
        if text and len(text) > cls.MESSAGE_TEXT:
            return "msg_too_long"
        if not blocks:
            return None
        if not isinstance(blocks, list) or len(blocks) > cls.BLOCKS:
            return "invalid_blocks"
        total = 0
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "section":
                total += cls._text(block.get("text"), cls.SECTION_TEXT, ("mrkdwn", "plain_text"))
            elif kind == "header":
                total += cls._text(block.get("text"), cls.HEADER_TEXT, ("plain_text",))
            elif kind == "context":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= cls.CONTEXT_ELEMENTS:
                    return "invalid_blocks"
                total += sum(cls._text(element, cls.SECTION_TEXT, ("mrkdwn", "plain_text")) for element in elements)
            elif kind == "divider":
                pass
            else:
                return "invalid_blocks"
            if total < 0:
                return "invalid_blocks"
        # Each block under its own limit, the message as a whole still refused [total].
        return "msg_blocks_too_long" if total > cls.TOTAL_BLOCK_TEXT else None

    @staticmethod
    def _text(obj: Any, limit: int, kinds: tuple[str, ...]) -> int:
        """Length of a text object's text, or a large negative number when Slack would refuse it."""
        if not isinstance(obj, dict) or obj.get("type") not in kinds or not isinstance(obj.get("text"), str):
            return -10**9
        if not 1 <= len(obj["text"]) <= limit:
            return -10**9
        return len(obj["text"])


# [scopes] What each method needs: (for public channels, for private channels).
METHOD_SCOPES = {
    "chat.postMessage": ("chat:write", "chat:write"),
    "chat.update": ("chat:write", "chat:write"),
    "conversations.history": ("channels:history", "groups:history"),
    "conversations.replies": ("channels:history", "groups:history"),
    "conversations.info": ("channels:read", "groups:read"),
    "files.getUploadURLExternal": ("files:write", "files:write"),
    "files.completeUploadExternal": ("files:write", "files:write"),
}
ALL_SCOPES = {"chat:write", "files:write", "channels:read", "channels:history", "groups:read", "groups:history"}


@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    member: bool = True
    archived: bool = False
    restriction: str | None = None  # e.g. "restricted_action_read_only_channel" for every post


class _LoopbackService:
    """A fake service's HTTP server (on a free loopback port unless told otherwise), answering with
    its ``_handler()``."""

    def listen(self, bind: str = "127.0.0.1", port: int = 0) -> None:
        # bind: loopback, or the lab bridge's address for a relay on a lab node.
        self.server = ThreadingHTTPServer((bind, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        address, port = self.server.server_address[:2]
        return f"http://{address}:{port}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeSlack(_LoopbackService):
    """Slack Web API: chat.postMessage/update, conversations.history/replies/list/info, auth.test and
    the files upload v2 flow; strict about tokens, scopes, channels, blocks and pace."""

    def __init__(self, token: str, channels: dict[str, str], scopes: set[str] | None = None, *,
                 private: set[str] = frozenset(), share_delay_s: float = 0.3, pace_s: float = 0.0,
                 bind: str = "127.0.0.1", port: int = 0):
        self.tokens: dict[str, set[str]] = {token: set(ALL_SCOPES if scopes is None else scopes)}
        self.revoked: set[str] = set()
        self.inactive: set[str] = set()
        self.channels = {name: Channel(cid, name.lstrip("#"), private=name in private) for name, cid in channels.items()}
        self.calls: list[Call] = []       # every successful API call, in order
        self.refused: list[Call] = []     # every call refused (status or error), in order
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel ID, ts) -> message as now shown
        self.uploaded: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self.outage_until = 0.0
        self.rate_limited_until = 0.0
        self.retry_after = 1
        self.rate_limit_in_body_until = 0.0  # [postMessage] rate_limited, HTTP 200
        self.share_delay_s = share_delay_s   # [upload] the share shows in history this much later
        self.pace_s = pace_s                 # [ratelimits] per channel; 0: not enforced
        self._last_post: dict[str, float] = {}
        self.hang: dict[str, float] = {}     # method -> seconds its next call's answer is held back
        self.swallow: dict[str, float] = {}  # the same, and the call has no effect
        self.fatal: dict[str, int] = {}      # method -> how many next calls take effect, then answer fatal_error
        self.listen(bind, port)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/"

    # Faults and changes on demand
    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    def hang_next(self, method: str, seconds: float, take_effect: bool = True) -> None:
        """The next call of ``method`` takes effect (or not), but its answer comes ``seconds`` later."""
        (self.hang if take_effect else self.swallow)[method] = seconds

    def storm(self, seconds: float, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        self.rate_limited_until = time.monotonic() + seconds

    def rate_limit_in_body(self, seconds: float) -> None:
        self.rate_limit_in_body_until = time.monotonic() + seconds

    def set_token(self, token: str, scopes: set[str] | None = None) -> None:
        with self._lock:
            self.tokens[token] = set(ALL_SCOPES if scopes is None else scopes)
            self.revoked.discard(token)
            self.inactive.discard(token)

    def revoke(self, token: str) -> None:
        with self._lock:
            self.revoked.add(token)

    def channel(self, name: str) -> Channel:
        return self.channels[name]

    # What tests look at
    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def refusals(self, error: str | None = None) -> list[Call]:
        with self._lock:
            return [call for call in self.refused if error is None or call.params.get("error") == error]

    def channel_id(self, channel: str) -> str:
        return self.channels[channel].id if channel in self.channels else channel

    def posts(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Top-level messages as shown now (updates applied), oldest first."""
        with self._lock:
            return [{**m, "channel_id": cid, "ts": ts} for (cid, ts), m in sorted(self.messages.items(), key=lambda i: float(i[0][1]))
                    if not m.get("thread_ts") and (channel_id is None or cid == channel_id)]

    # The API
    def _by_id(self, channel_id: Any) -> Channel | None:
        return next((c for c in self.channels.values() if c.id == channel_id), None)

    def _by_id_or_name(self, value: Any) -> Channel | None:
        # [postMessage] channel: "An encoded ID or channel name"; other methods take IDs only.
        found = self._by_id(value)
        if found is None and isinstance(value, str):
            found = self.channels.get("#" + value.lstrip("#"))
        return found

    def _ts_now(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _scope_error(self, method: str, token_scopes: set[str], channel: Channel | None) -> dict | None:
        if method not in METHOD_SCOPES:
            return None
        needed = METHOD_SCOPES[method][1 if channel is not None and channel.private else 0]
        if needed in token_scopes:
            return None
        return {"ok": False, "error": "missing_scope", "needed": needed, "provided": ",".join(sorted(token_scopes))}

    def _api(self, method: str, params: dict[str, Any], scopes: set[str]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://homelab.slack.com/", "team": "homelab", "user": "alert-relay",
                    "team_id": "T0000000001", "user_id": "U0000000001", "bot_id": "B0000000001"}
        if method == "chat.postMessage":
            channel = self._by_id_or_name(params.get("channel"))
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            if (error := self._scope_error(method, scopes, channel)):
                return error
            if channel.private and not channel.member:
                return {"ok": False, "error": "channel_not_found"}  # private: invisible to non-members
            if channel.archived:
                return {"ok": False, "error": "is_archived"}
            if not channel.member and "chat:write.public" not in scopes:
                return {"ok": False, "error": "not_in_channel"}
            # [postMessage] restricted_action_read_only_channel: no posts; _thread_only_channel: only
            # thread replies; _non_threadable_channel: no thread replies.
            reply = bool(params.get("thread_ts"))
            if (channel.restriction == "restricted_action_read_only_channel"
                    or (channel.restriction == "restricted_action_thread_only_channel" and not reply)
                    or (channel.restriction == "restricted_action_non_threadable_channel" and reply)):
                return {"ok": False, "error": channel.restriction}
            if (problem := SlackLimits.check_message(params.get("text"), params.get("blocks"))):
                return {"ok": False, "error": problem}
            if params.get("thread_ts") and (channel.id, params["thread_ts"]) not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            ts = self._ts_now()
            self.messages[(channel.id, ts)] = dict(params)
            self.calls.append(Call(method, {**params, "channel_id": channel.id, "ts": ts}))
            return {"ok": True, "channel": channel.id, "ts": ts, "message": {"text": params.get("text"), "ts": ts}}
        if method == "chat.update":
            channel = self._by_id(params.get("channel"))  # [update] "Channel ID" only
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            if (error := self._scope_error(method, scopes, channel)):
                return error
            key = (channel.id, params.get("ts"))
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            if (problem := SlackLimits.check_message(params.get("text"), params.get("blocks"))):
                return {"ok": False, "error": problem}
            self.messages[key] = {**self.messages[key], "text": params.get("text"), "blocks": params.get("blocks")}
            self.calls.append(Call(method, dict(params)))
            return {"ok": True, "channel": channel.id, "ts": params["ts"]}
        if method in ("conversations.history", "conversations.replies"):
            channel = self._by_id(params.get("channel"))
            if channel is None or (channel.private and not channel.member):
                return {"ok": False, "error": "channel_not_found"}
            if (error := self._scope_error(method, scopes, channel)):
                return error
            if not channel.member:
                return {"ok": False, "error": "not_in_channel"}
            # Newest first, like Slack; history holds top-level messages, replies one thread.
            oldest, now = float(params.get("oldest") or 0), time.time()
            found = []
            for (cid, ts), posted in self.messages.items():
                if cid != channel.id or float(ts) < oldest or posted.get("visible_at", 0) > now:
                    continue
                in_thread = posted.get("thread_ts")
                if method == "conversations.history" and in_thread:
                    continue
                if method == "conversations.replies" and ts != params.get("ts") and in_thread != params.get("ts"):
                    continue
                shown = {"type": "message", "ts": ts, "text": posted.get("text", "")}
                if posted.get("files"):
                    shown["files"] = posted["files"]
                if posted.get("metadata") and str(params.get("include_all_metadata")).lower() in ("1", "true"):
                    metadata = posted["metadata"]
                    shown["metadata"] = json.loads(metadata) if isinstance(metadata, str) else metadata
                found.append(shown)
            self.calls.append(Call(method, dict(params)))
            return {"ok": True, "messages": sorted(found, key=lambda m: float(m["ts"]), reverse=True), "has_more": False}
        if method == "conversations.info":
            channel = self._by_id(params.get("channel"))
            if channel is None or (channel.private and not channel.member):
                return {"ok": False, "error": "channel_not_found"}
            if (error := self._scope_error(method, scopes, channel)):
                return error
            self.calls.append(Call(method, dict(params)))
            return {"ok": True, "channel": {"id": channel.id, "name": channel.name, "is_channel": True,
                                            "is_private": channel.private, "is_archived": channel.archived,
                                            "is_member": channel.member}}
        if method == "conversations.list":
            types = str(params.get("types") or "public_channel").split(",")
            # [list] public_channel needs channels:read, private_channel groups:read.
            for kind, scope in (("public_channel", "channels:read"), ("private_channel", "groups:read")):
                if kind in types and scope not in scopes:
                    return {"ok": False, "error": "missing_scope", "needed": scope, "provided": ",".join(sorted(scopes))}
            shown = [c for c in self.channels.values()
                     if ("private_channel" if c.private else "public_channel") in types
                     and (not c.private or c.member)
                     and not (c.archived and str(params.get("exclude_archived")).lower() in ("1", "true"))]
            self.calls.append(Call(method, dict(params)))
            return {"ok": True, "channels": [{"id": c.id, "name": c.name, "is_channel": True, "is_private": c.private,
                                              "is_archived": c.archived, "is_member": c.member} for c in shown],
                    "response_metadata": {"next_cursor": ""}}
        if method == "files.getUploadURLExternal":
            if (error := self._scope_error(method, scopes, None)):
                return error
            if not params.get("filename") or not str(params.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F{next(self._ids):010d}"
            self.calls.append(Call(method, {**params, "file_id": file_id}))
            self._pending_names = getattr(self, "_pending_names", {})
            self._pending_names[file_id] = params["filename"]
            return {"ok": True, "file_id": file_id, "upload_url": f"{self.origin}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            if (error := self._scope_error(method, scopes, None)):
                return error
            files = json.loads(params["files"]) if isinstance(params.get("files"), str) else params.get("files") or []
            if any(f.get("id") not in self.uploaded for f in files):
                return {"ok": False, "error": "file_not_found"}
            channel = self._by_id(params.get("channel_id")) if params.get("channel_id") else None
            if params.get("channel_id") and (channel is None or (channel.private and not channel.member)):
                return {"ok": False, "error": "channel_not_found"}
            if channel is not None and not channel.member:
                return {"ok": False, "error": "not_in_channel"}
            shared = [{"id": f["id"], "name": self._pending_names.get(f["id"]), "title": f.get("title")} for f in files]
            if channel is not None:
                # [upload] the share is processed asynchronously: it reaches history a little later.
                ts = self._ts_now()
                self.messages[(channel.id, ts)] = {"text": params.get("initial_comment", ""), "files": shared,
                                                   "visible_at": time.time() + self.share_delay_s}
            self.calls.append(Call(method, {**params, "files": files,
                                            "content": [self.uploaded[f["id"]] for f in files]}))
            return {"ok": True, "files": shared}
        return {"ok": False, "error": "unknown_method"}

    def _handler(self):
        fake = self

        class Handler(_QuietHandler):
            def refuse(self, method: str, status: int, body: dict | bytes, content_type="application/json", headers=None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                with fake._lock:
                    fake.refused.append(Call(method, {"status": status, **(body if isinstance(body, dict) else {})}))
                self.reply(status, data, content_type, headers)

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
                    self.refuse(method, 503, b"<html>Service Unavailable</html>", "text/html")
                    return
                if now < fake.rate_limited_until:
                    self.refuse(method, 429, {"ok": False, "error": "ratelimited"},
                                headers={"Retry-After": str(fake.retry_after)})
                    return
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("application/json"):
                    params = json.loads(raw or b"{}")  # [sdk] JSON body for blocks-bearing calls
                else:
                    params = dict(parse_qsl(raw.decode()))
                params.update(dict(parse_qsl(urlsplit(self.path).query)))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
                with fake._lock:
                    if not token:
                        error = "not_authed"
                    elif token in fake.revoked:
                        error = "token_revoked"
                    elif token in fake.inactive:
                        error = "account_inactive"
                    elif token not in fake.tokens:
                        error = "invalid_auth"
                    else:
                        error = None
                    scopes = fake.tokens.get(token, set())
                if error:  # [errors] HTTP 200, ok false
                    self.refuse(method, 200, {"ok": False, "error": error})
                    return
                if method in fake.swallow:
                    with fake._lock:
                        fake.refused.append(Call(method, {"status": "swallowed"}))
                    time.sleep(fake.swallow.pop(method))
                    self.reply(503, b"<html>Gateway Timeout</html>", "text/html")
                    return
                if method == "chat.postMessage" and not params.get("thread_ts"):
                    channel = fake._by_id_or_name(params.get("channel"))
                    key = channel.id if channel else str(params.get("channel"))
                    if now < fake.rate_limit_in_body_until:
                        self.refuse(method, 200, {"ok": False, "error": "rate_limited"})
                        return
                    if fake.pace_s and now - fake._last_post.get(key, -1e9) < fake.pace_s:
                        # [ratelimits] past about one message per second per channel
                        self.refuse(method, 429, {"ok": False, "error": "ratelimited"},
                                    headers={"Retry-After": "1"})
                        return
                with fake._lock:
                    answer = fake._api(method, params, scopes)
                    if answer["ok"] and method == "chat.postMessage" and not params.get("thread_ts"):
                        fake._last_post[answer["channel"]] = now
                    if answer["ok"] and fake.fatal.get(method):
                        # [errors] fatal_error: "some aspect of the operation succeeded"
                        fake.fatal[method] -= 1
                        answer = {"ok": False, "error": "fatal_error"}
                headers = {"X-OAuth-Scopes": ",".join(sorted(scopes))}  # [scopes]
                if not answer["ok"]:
                    self.refuse(method, 200, answer, headers=headers)
                    return
                time.sleep(fake.hang.pop(method, 0))
                self.reply(200, json.dumps(answer).encode(), headers=headers)

            do_GET = do_POST

        return Handler


FAX_PDF_MAGIC = b"%PDF-1.4\n"


class FakeFaxPlus(_LoopbackService):
    """FAX.PLUS REST API v3 [faxplus]: the account and file endpoints, with a bearer token and scopes.

    ``file_key`` says which webhook field the files endpoint takes as its path parameter:
    "fax_id" (the documented name, data.id) or "file" (data.file, as the fax record describes it).
    ``redirect_to``: answer file downloads with a 302 to that base URL (another origin).
    """

    def __init__(self, token: str, scopes: set[str] | None = None, file_key: str = "fax_id"):
        self.token = token
        self.scopes = {"fax:fax:read", "fax:user:read"} if scopes is None else set(scopes)
        self.file_key = file_key
        self.files: dict[str, bytes] = {}   # fax id -> PDF
        self.file_names: dict[str, str] = {}  # fax id -> data.file
        self.requests: list[dict[str, str]] = []
        self.redirect_to: str | None = None
        self.fail_with: int | None = None
        self.retry_after = 1
        self.listen()

    @property
    def base_url(self) -> str:
        """As FAX.PLUS presents it: ending in /v3."""
        return f"{self.origin}/v3"

    def add_pdf(self, fax_id: str, file: str | None = None) -> bytes:
        """A received fax's PDF, downloadable by its fax id (or data.file, per ``file_key``)."""
        self.files[fax_id] = FAX_PDF_MAGIC + f"fax {fax_id}\n%%EOF\n".encode()
        self.file_names[fax_id] = file or f"{fax_id}-file"
        return self.files[fax_id]

    def _handler(self):
        fake = self

        class Handler(_QuietHandler):
            def error(self, status: int, error: str, description: str, headers=None):
                # [faxplus] error model: {"error": ..., "description": ...}
                self.reply(status, json.dumps({"error": error, "description": description}).encode(), headers=headers)

            def do_GET(self):
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                fake.requests.append({"path": url.path, **query,
                                      "authorization": "yes" if self.headers.get("Authorization") else "no"})
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self.error(401, "unauthorized", "Invalid or missing access token")
                    return
                if fake.fail_with == 429:
                    self.error(429, "too_many_requests", "Rate limit exceeded", {"Retry-After": str(fake.retry_after)})
                    return
                if fake.fail_with:
                    self.error(fake.fail_with, "internal_server_error", "Something went wrong")
                    return
                if url.path == "/v3/accounts/self":
                    if not fake.scopes & {"fax:all:read", "fax:member:read", "fax:user:read"}:
                        self.error(403, "insufficient_scope", "Token lacks fax:user:read")
                        return
                    self.reply(200, json.dumps({"uid": "7724157c", "account_type": "individual",
                                                "email": "ops@example.invalid", "status": "active",
                                                "creation_date": "2024-01-01 00:00:00"}).encode())
                    return
                prefix = "/v3/accounts/self/files/"
                if not url.path.startswith(prefix):
                    self.error(404, "not_found", "No such endpoint")
                    return
                if not fake.scopes & {"fax:fax:read", "fax:all:read"}:
                    self.error(403, "insufficient_scope", "Token lacks fax:fax:read")
                    return
                if query.get("format") not in ("pdf", "tiff"):
                    self.error(400, "invalid_format", "format must be pdf or tiff")
                    return
                key = url.path.removeprefix(prefix)
                by_key = {(fax_id if fake.file_key == "fax_id" else fake.file_names[fax_id]): fax_id for fax_id in fake.files}
                if key not in by_key:
                    self.error(404, "file_not_found", "File not found")
                    return
                if fake.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", f"{fake.redirect_to}{url.path}?{url.query}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.reply(200, fake.files[by_key[key]], "application/pdf")

        return Handler
