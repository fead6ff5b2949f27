"""Turning queued messages into Slack calls: alert messages, their threads, fax uploads (content from render.py).

Every outcome is one of: success, RateLimited (wait, not a failed attempt), PermanentError (no
retry can help: straight to the dead letters) or any other exception (a failed attempt, retried
with backoff).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from alert_relay.render import fax_comment, render_alert, render_thread_reply
from alert_relay.store import Message, Store

log = logging.getLogger("alert_relay")

# Slack answers these for this message whatever we retry: it goes to the dead letters at once.
# Token problems (invalid_auth, token_revoked, missing_scope...) are not here: they hit every
# message alike, and once the token file is fixed and the relay restarted, the retries succeed.
PERMANENT_SLACK_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
    "msg_too_long", "no_text", "invalid_arguments", "restricted_action", "too_many_attachments",
}
# chat.update cannot edit the original any more (deleted, too old): post a fresh message instead.
UNEDITABLE = {"message_not_found", "cant_update_message", "edit_window_closed"}


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limited for {retry_after:g}s")
        self.retry_after = retry_after


class PermanentError(Exception):
    pass


def _retry_after(headers: Any) -> float:
    value = None
    if headers is not None:
        value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 1.0  # Slack always sends it; be polite if a proxy dropped it


class Slack:
    """Sends queued messages; one instance, used by the one delivery worker."""

    def __init__(self, store: Store, token: str, base_url: str, faxplus_token: str, faxplus_base_url: str,
                 alertmanager_url: str | None, timeout: int = 15):
        self.store = store
        # No SDK retry handlers: the worker owns retries, so a 429 waits there and is never a failure.
        self.client = WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])
        self.faxplus_token = faxplus_token
        self.faxplus_base_url = faxplus_base_url.rstrip("/")
        self.alertmanager_url = alertmanager_url
        self.timeout = timeout
        self._channel_ids: dict[str, str] = {}

    def send(self, message: Message) -> None:
        """Deliver ``message`` and record it delivered, or raise.

        A send cut off before Slack answered (kill, timeout) leaves ``sending_since`` set; the
        next attempt first looks in the channel for what that send may have posted.
        """
        try:
            if message.sending_since is not None and self._arrived(message):
                return
            self.store.set_sending(message, time.time())
            try:
                if message.kind == "alert":
                    self._send_alert(message)
                else:
                    self._send_fax(message)
            except (SlackApiError, PermanentError, RateLimited):
                # Answered: nothing of this attempt arrived, no need to look for it next time.
                self.store.set_sending(message, None)
                raise
        except SlackApiError as exc:
            raise self._classify(exc) from None

    @staticmethod
    def _classify(exc: SlackApiError) -> Exception:
        response = exc.response
        if response.status_code == 429:
            return RateLimited(_retry_after(response.headers))
        error = response.get("error") if isinstance(response.data, dict) else None
        if error == "ratelimited":
            return RateLimited(_retry_after(response.headers))
        if error in PERMANENT_SLACK_ERRORS:
            return PermanentError(f"slack: {error}")
        return RuntimeError(f"slack: HTTP {response.status_code} {error or ''}".strip())

    @staticmethod
    def _marker(message: Message) -> dict[str, Any]:
        """Slack message metadata naming the queued message a post delivers."""
        return {"event_type": "alert_relay_message",
                "event_payload": {"queue_id": message.id, "queued_at": message.created}}

    def _arrived(self, message: Message) -> bool:
        """Whether a post carrying this message's marker is in Slack since its cut-off send began;
        if so, it is recorded as delivered."""
        oldest = f"{message.sending_since - 60:.6f}"  # margin for clock skew with Slack
        wanted = self._marker(message)["event_payload"]
        open_thread = self.store.thread(message.payload["thread_key"]) if message.kind == "alert" else None
        if open_thread:
            channel_id, ts = open_thread
            found = self.client.conversations_replies(channel=channel_id, ts=ts, oldest=oldest,
                                                      include_all_metadata=True, limit=200)
        else:
            channel_id = self._channel_id(message.channel)
            found = self.client.conversations_history(channel=channel_id, oldest=oldest,
                                                      include_all_metadata=True, limit=200)
        comment = fax_comment(message.payload) if message.kind == "fax" else None
        for posted in found["messages"]:
            if (posted.get("metadata") or {}).get("event_payload") == wanted or (
                    comment and posted.get("files") and posted.get("text") == comment):
                log.warning("already delivered before the interruption", extra={"fields": {
                    "id": message.id, "kind": message.kind, "channel": message.channel}})
                self._recorded(message, channel_id, posted["ts"], open_thread is not None)
                return True
        return False

    def _recorded(self, message: Message, channel_id: str, ts: str, as_reply: bool) -> None:
        if message.kind != "alert":
            self.store.delivered(message)
            return
        thread_key = message.payload["thread_key"]
        resolved = message.payload["status"] == "resolved"
        thread = None if resolved or as_reply else (thread_key, channel_id, ts)
        self.store.delivered(message, thread=thread, close_thread=thread_key if resolved else None)

    # Alerts: one message per alert group and channel, updated in place and replied to in its thread.
    def _send_alert(self, message: Message) -> None:
        payload = message.payload
        text, blocks = render_alert(payload, self.alertmanager_url)
        open_thread = self.store.thread(payload["thread_key"])
        if open_thread:
            channel_id, ts = open_thread
            try:
                self.client.chat_update(channel=channel_id, ts=ts, text=text, blocks=blocks)
            except SlackApiError as exc:
                if not (isinstance(exc.response.data, dict) and exc.response.get("error") in UNEDITABLE):
                    raise
            else:
                # Last call: if it fails, the retry repeats the harmless update, then replies once.
                reply = self.client.chat_postMessage(channel=channel_id, thread_ts=ts, text=render_thread_reply(payload),
                                                     metadata=self._marker(message))
                self._recorded(message, channel_id, reply["ts"], as_reply=True)
                return
        response = self.client.chat_postMessage(channel=message.channel, text=text, blocks=blocks,
                                                metadata=self._marker(message))
        self._recorded(message, response["channel"], response["ts"], as_reply=False)

    # Faxes: the PDF from FAX.PLUS, uploaded to the channel with who sent it, pages and time.
    def _send_fax(self, message: Message) -> None:
        payload = message.payload
        pdf = self._download_fax(payload["file_id"])
        # files.completeUploadExternal takes no metadata: _arrived finds the share by its comment.
        self.client.files_upload_v2(
            channel=self._channel_id(message.channel),
            content=pdf,
            filename=payload["file_name"],
            title=f"Fax from {payload['sender']}",
            initial_comment=fax_comment(payload),
        )
        self.store.delivered(message)

    def _download_fax(self, file_id: str) -> bytes:
        url = f"{self.faxplus_base_url}/v3/accounts/self/files/{quote(file_id, safe='')}?format=pdf"
        request = urllib.request.Request(url, headers={
            "Authorization": f"Bearer {self.faxplus_token}", "Accept": "application/pdf"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429:
                raise RateLimited(_retry_after(exc.headers)) from None
            if exc.code == 400:
                raise PermanentError(f"fax.plus: HTTP 400 for file {file_id}") from None
            raise RuntimeError(f"fax.plus: HTTP {exc.code} for file {file_id}") from None

    def _channel_id(self, channel: str) -> str:
        """files.completeUploadExternal wants a channel ID; routes may name channels as #name."""
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
            raise PermanentError(f"slack: channel {channel} not found (invite the bot, or use the channel ID)")
        return self._channel_ids[channel]


def describe(exc: BaseException) -> str:
    """A short error text for logs and the dead-letter table: the first line only, where no
    request body or header (token) appears."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
