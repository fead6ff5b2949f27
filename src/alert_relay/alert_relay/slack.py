"""Turning queued messages into Slack calls: alert messages, their threads, digests and fax uploads
(content from render.py), and FAX.PLUS downloads.

Every outcome is success or one of these, each handled its own way by the worker:
- RateLimited: wait (all sending after a 429, or one channel after Slack's HTTP 200 `rate_limited`);
  not a failed attempt.
- Deferred: look again later (a file share Slack has not shown in history yet); not an attempt.
- AuthFailed: the token is refused (revoked, wrong, missing a scope): delivery through that service
  pauses for every channel until it works again; nothing is counted or dead-lettered.
- ChannelBlocked: only a person can fix the channel (bot not in it, archived, read-only): that
  channel waits, the others go on; nothing is dead-lettered.
- PermanentError: no retry can help this message (unrenderable, refused blocks): dead letter at once.
- any other exception: a failed attempt, retried with backoff up to max_attempts.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from alert_relay.render import (
    Unrenderable, fax_comment, fax_file_name, fax_title, render_alert, render_digest, render_thread_reply,
)
from alert_relay.store import Message, Store

log = logging.getLogger("alert_relay")

# The token or its scopes: the same for every message, fixed by a person (new token, reinstall).
AUTH_ERRORS = {
    "invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "missing_scope",
    "no_permission", "team_access_not_granted", "not_allowed_token_type", "ekm_access_denied", "org_login_required",
}
# The channel: fixed by a person (invite the bot, unarchive, allow posting, fix routes.yaml).
CHANNEL_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "restricted_action",
    "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
}
# This message as sent can never be taken.
PERMANENT_SLACK_ERRORS = {
    "invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "msg_too_long", "no_text",
    "invalid_arguments", "too_many_attachments", "invalid_metadata_format", "invalid_metadata_schema",
    "metadata_too_large", "invalid_attachments",
}
# Slack: "It's possible some aspect of the operation succeeded": look before sending again.
MAYBE_ARRIVED = {"fatal_error", "internal_error"}
# chat.update cannot edit the original any more (deleted, too old): post a fresh message instead.
UNEDITABLE = {"message_not_found", "cant_update_message", "edit_window_closed"}

# Slack processes file shares asynchronously; a share cut off this recently may not show yet.
SHARE_SETTLE_S = 10.0
MAX_FAX_BYTES = 64 << 20  # Slack takes up to 1 GB; a fax is a few MB


class RateLimited(Exception):
    def __init__(self, retry_after: float, channel: str | None = None):
        super().__init__(f"rate limited for {retry_after:g}s" + (f" in {channel}" if channel else ""))
        self.retry_after, self.channel = retry_after, channel


class Deferred(Exception):
    def __init__(self, seconds: float, channel: str, reason: str):
        super().__init__(reason)
        self.seconds, self.channel = seconds, channel


class AuthFailed(Exception):
    def __init__(self, service: str, error: str):
        super().__init__(f"{service}: {error}")
        self.service, self.error = service, error


class ChannelBlocked(Exception):
    def __init__(self, channel: str, error: str):
        super().__init__(f"slack: {error} for {channel}")
        self.channel, self.error = channel, error


class PermanentError(Exception):
    pass


class MaybeArrived(Exception):
    """A failed attempt whose send may have taken effect: the next attempt looks first."""


def _retry_after(headers: Any) -> float:
    value = None
    if headers is not None:
        value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 1.0  # Slack always sends it on a 429; be polite if a proxy dropped it


def slack_api_url(base_url: str) -> str:
    """slack-sdk joins method names to base_url, which must end in a slash."""
    return base_url if base_url.endswith("/") else base_url + "/"


def faxplus_api_url(base_url: str) -> str:
    """FAX.PLUS's API root: "https://restapi.fax.plus" and ".../v3" (as FAX.PLUS presents it) alike."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v3") else base + "/v3"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the origin asked: the bearer token goes nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl)[:2] != urlsplit(req.full_url)[:2]:
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to another origin refused: {msg}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Slack:
    """Sends queued messages; one instance, used by the one delivery worker."""

    def __init__(self, store: Store, token: str, base_url: str, faxplus_token: str, faxplus_base_url: str,
                 alertmanager_url: str | None, timeout: int = 15,
                 token_source: Callable[[], str] | None = None):
        self.store = store
        # No SDK retry handlers: the worker owns retries, so a 429 waits there and is never a failure.
        self.client = WebClient(token=token, base_url=slack_api_url(base_url), timeout=timeout, retry_handlers=[])
        self.token_source = token_source
        self.faxplus_token = faxplus_token
        self.faxplus_url = faxplus_api_url(faxplus_base_url)
        self.alertmanager_url = alertmanager_url
        self.timeout = timeout
        self._faxplus = urllib.request.build_opener(_Redirects())
        self._channel_ids: dict[str, str] = {}
        self._fax_key_logged = False

    def reload_token(self) -> None:
        """Read the token file again (while paused for a refused token): a fixed file resumes delivery."""
        if self.token_source is None:
            return
        try:
            token = self.token_source()
        except Exception as exc:  # a half-written file: keep the old token, try again next time
            log.warning("cannot read the slack token file", extra={"fields": {"error": str(exc)[:200]}})
            return
        if token != self.client.token:
            self.client.token = token
            log.info("slack token file changed: trying the new token")

    def send(self, message: Message, batch: list[Message] | None = None, queued: int = 0) -> int:
        """Deliver ``message`` (with ``batch``, the channel's next alerts, as one digest) and record
        it delivered, or raise; how many queued messages it delivered.

        A send cut off before Slack answered (kill, timeout, fatal_error) leaves ``sending_since``
        set; the next attempt first looks in the channel for what that send may have posted.
        """
        try:
            if message.sending_since is not None and self._arrived(message):
                return 1
            # FAX.PLUS first: its failures leave nothing in Slack to look for.
            pdf = self._download_fax(message.payload) if message.kind == "fax" else b""
            self.store.set_sending(message, time.time())
            try:
                if batch and len(batch) > 1:
                    return self._send_digest(batch, queued)
                if message.kind == "alert":
                    self._send_alert(message)
                else:
                    self._send_fax(message, pdf)
                return 1
            except SlackApiError as exc:
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
                if error not in MAYBE_ARRIVED:
                    self.store.set_sending(message, None)  # answered: nothing of it arrived
                raise
            except (PermanentError, RateLimited, AuthFailed, ChannelBlocked, Unrenderable):
                self.store.set_sending(message, None)
                raise
        except SlackApiError as exc:
            raise self._classify(exc, message.channel) from None
        except Unrenderable as exc:
            raise PermanentError(f"unrenderable: {exc}") from None

    @staticmethod
    def _classify(exc: SlackApiError, channel: str) -> Exception:
        response = exc.response
        if response.status_code == 429:
            return RateLimited(_retry_after(response.headers))
        error = response.get("error") if isinstance(response.data, dict) else None
        if error in ("ratelimited", "rate_limited"):
            # The HTTP 200 form is chat.postMessage's per-channel limit: that channel waits.
            return RateLimited(_retry_after(response.headers), channel if error == "rate_limited" else None)
        if error in AUTH_ERRORS:
            needed = response.get("needed") if error == "missing_scope" else None
            return AuthFailed("slack", error + (f" (needs {needed})" if needed else ""))
        if error in CHANNEL_ERRORS:
            return ChannelBlocked(channel, error)
        if error in PERMANENT_SLACK_ERRORS:
            return PermanentError(f"slack: {error}")
        if error in MAYBE_ARRIVED:
            return MaybeArrived(f"slack: {error} (may have arrived: looked for before sending again)")
        return RuntimeError(f"slack: HTTP {response.status_code} {error or ''}".strip())

    @staticmethod
    def _marker(message: Message, through: int | None = None) -> dict[str, Any]:
        """Slack message metadata naming the queued message a post delivers (and the last one of a digest)."""
        payload: dict[str, Any] = {"queue_id": message.id, "queued_at": message.created}
        if through is not None:
            payload["through"] = through
        return {"event_type": "alert_relay_message", "event_payload": payload}

    def _arrived(self, message: Message) -> bool:
        """Whether a post of this message is in Slack since its cut-off send began; if so, it is
        recorded as delivered. Alert posts carry their queue id in metadata; fax shares are known
        by the FAX.PLUS fax id in their file name."""
        oldest = f"{message.sending_since - 60:.6f}"  # margin for clock skew with Slack
        open_thread = self.store.thread(message.payload["thread_key"]) if message.kind == "alert" else None
        if open_thread:
            channel_id, ts = open_thread
            found = self.client.conversations_replies(channel=channel_id, ts=ts, oldest=oldest,
                                                      include_all_metadata=True, limit=200)
        else:
            channel_id = self._channel_id(message.channel)
            found = self.client.conversations_history(channel=channel_id, oldest=oldest,
                                                      include_all_metadata=True, limit=200)
        fax_name = fax_file_name(message.payload) if message.kind == "fax" else None
        for posted in found["messages"]:
            marker = (posted.get("metadata") or {}).get("event_payload") or {}
            if message.kind == "alert" and (marker.get("queue_id"), marker.get("queued_at")) == (message.id, message.created):
                log.warning("already delivered before the interruption", extra={"fields": {
                    "id": message.id, "kind": message.kind, "channel": message.channel}})
                if "through" in marker:
                    batch = [m for m in self.store.channel_batch(message.channel, 100_000) if m.id <= marker["through"]]
                    self._recorded_digest(batch)
                else:
                    self._recorded(message, channel_id, posted["ts"], open_thread is not None)
                return True
            if fax_name and any(f.get("name") == fax_name for f in posted.get("files") or []):
                log.warning("already delivered before the interruption", extra={"fields": {
                    "id": message.id, "kind": message.kind, "channel": message.channel}})
                self.store.delivered(message)
                return True
        if fax_name and time.time() - message.sending_since < SHARE_SETTLE_S:
            # Shares reach history asynchronously: not seen yet is not "did not arrive" yet.
            raise Deferred(SHARE_SETTLE_S - (time.time() - message.sending_since), message.channel,
                           "waiting for a cut-off file share to show in history")
        return False

    def _recorded(self, message: Message, channel_id: str, ts: str, as_reply: bool) -> None:
        if message.kind != "alert":
            self.store.delivered(message)
            return
        thread_key = message.payload["thread_key"]
        resolved = message.payload["status"] == "resolved"
        thread = None if resolved or as_reply else (thread_key, channel_id, ts)
        self.store.delivered(message, thread=thread, close_thread=thread_key if resolved else None)

    def _recorded_digest(self, batch: list[Message]) -> None:
        # A group resolved in the digest has nothing left to update; firing ones keep their thread.
        closed = [m.payload["thread_key"] for m in batch if m.payload.get("status") == "resolved"]
        self.store.delivered_batch(batch, closed)

    # Alerts: one message per alert group and channel, updated in place and replied to in its thread.
    def _send_alert(self, message: Message) -> None:
        payload = message.payload
        text, blocks = render_alert(payload, self.alertmanager_url)
        open_thread = self.store.thread(payload["thread_key"])
        if open_thread:
            channel_id, ts = open_thread
            try:
                self.client.chat_update(channel=channel_id, ts=ts, text=text, blocks=blocks, parse="none")
            except SlackApiError as exc:
                if not (isinstance(exc.response.data, dict) and exc.response.get("error") in UNEDITABLE):
                    raise
            else:
                # Last call: if it fails, the retry repeats the harmless update, then replies once.
                try:
                    reply = self.client.chat_postMessage(
                        channel=channel_id, thread_ts=ts, text=render_thread_reply(payload),
                        metadata=self._marker(message), parse="none", unfurl_links=False, unfurl_media=False)
                except SlackApiError as exc:
                    if exc.response.get("error") != "restricted_action_non_threadable_channel":
                        raise
                    # No thread replies in this channel: the updated message already shows the state.
                    self._recorded(message, channel_id, ts, as_reply=True)
                    return
                self._recorded(message, channel_id, reply["ts"], as_reply=True)
                return
        response = self.client.chat_postMessage(channel=message.channel, text=text, blocks=blocks,
                                                metadata=self._marker(message), parse="none",
                                                unfurl_links=False, unfurl_media=False)
        self._recorded(message, response["channel"], response["ts"], as_reply=False)

    def _send_digest(self, batch: list[Message], queued: int) -> int:
        """The channel's next queued alerts as one message, as many as fit; the rest stay queued."""
        text, blocks, used = render_digest([m.payload for m in batch], queued)
        batch = batch[:used]
        self.client.chat_postMessage(channel=batch[0].channel, text=text, blocks=blocks,
                                     metadata=self._marker(batch[0], through=batch[-1].id), parse="none",
                                     unfurl_links=False, unfurl_media=False)
        self._recorded_digest(batch)
        log.info("digest delivered", extra={"fields": {"channel": batch[0].channel, "notifications": used,
                                                       "first_id": batch[0].id, "last_id": batch[-1].id}})
        return used

    # Faxes: the PDF from FAX.PLUS, uploaded to the channel with who sent it, pages and time.
    def _send_fax(self, message: Message, pdf: bytes) -> None:
        payload = message.payload
        self.client.files_upload_v2(
            channel=self._channel_id(message.channel),
            content=pdf,
            filename=fax_file_name(payload),  # the fax id: how a cut-off share is recognised
            title=fax_title(payload),
            initial_comment=fax_comment(payload),
        )
        self.store.delivered(message)

    def _download_fax(self, payload: dict[str, Any]) -> bytes:
        """GET /accounts/self/files/{fax_id}?format=pdf. FAX.PLUS names the path parameter fax_id
        (webhook data.id); its fax record calls data.file "the file ID for the getFile handle". The
        documented parameter is tried first, data.file once after a 404; the log says which worked."""
        tries = [("fax_id", str(payload["fax_id"]))]
        if payload.get("file_id") and str(payload["file_id"]) != tries[0][1]:
            tries.append(("file", str(payload["file_id"])))
        for number, (name, key) in enumerate(tries):
            url = f"{self.faxplus_url}/accounts/self/files/{quote(key, safe='')}?format=pdf"
            request = urllib.request.Request(url, headers={"Accept": "application/pdf"})
            request.add_unredirected_header("Authorization", f"Bearer {self.faxplus_token}")
            try:
                with self._faxplus.open(request, timeout=self.timeout) as response:
                    pdf = response.read(MAX_FAX_BYTES + 1)
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and number + 1 < len(tries):
                    continue
                if exc.code == 429:
                    raise RateLimited(_retry_after(exc.headers)) from None
                if exc.code in (401, 403):
                    raise AuthFailed("faxplus", f"HTTP {exc.code} for the files endpoint (token or its fax:fax:read scope)") from None
                raise RuntimeError(f"fax.plus: HTTP {exc.code} for fax {payload['fax_id']} ({exc.reason})") from None
            if len(pdf) > MAX_FAX_BYTES:
                raise PermanentError(f"fax.plus: fax {payload['fax_id']} is larger than {MAX_FAX_BYTES} bytes")
            if not self._fax_key_logged or number:
                log.info("fax downloaded", extra={"fields": {"by": name, "fax_id": payload["fax_id"]}})
                self._fax_key_logged = True
            return pdf
        raise AssertionError("unreachable")

    def _channel_id(self, channel: str) -> str:
        """files.completeUploadExternal and conversations.history want a channel ID; routes may name
        channels as #name (private ones are listed only with groups:read)."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._channel_ids:
            cursor = None
            while True:
                page = self.client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor)
                for conv in page["channels"]:
                    self._channel_ids[f"#{conv['name']}"] = conv["id"]
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        if channel not in self._channel_ids:
            raise ChannelBlocked(channel, "channel_not_found")
        return self._channel_ids[channel]


def describe(exc: BaseException) -> str:
    """A short error text for logs and the dead-letter table: the first line only, where no
    request body or header (token) appears."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
