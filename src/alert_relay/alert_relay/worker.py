"""The one delivery worker: channel by channel in queue order, paced, with backoff, pauses and dead letters.

Only the oldest message of a channel may be sent, so a channel's messages arrive in order even
across outages. Each channel gets at most one message per `channel_interval_s` (Slack's limit is
about one per second per channel); a channel with a backlog gets digests, several queued alerts
in one message, so that its newest state shows within a minute or two even after a flood.

What waits without counting as a failed attempt: a 429 (all sending, for its Retry-After), Slack's
`rate_limited` (that channel), a refused token or scope (all Slack delivery, or all faxes for
FAX.PLUS, probed with backoff until it works, re-reading the token file), a channel only a person
can fix (that channel). Other failures back off exponentially and, after `max_attempts`, the
message moves to the dead letters: no channel waits on one message longer than that budget.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass

from alert_relay import metrics
from alert_relay.slack import AuthFailed, ChannelBlocked, Deferred, PermanentError, RateLimited, Slack, describe
from alert_relay.store import Message, Store, describe_error

log = logging.getLogger("alert_relay")

IDLE_WAKEUP_S = 30.0  # also the period for housekeeping when nothing arrives
HOUSEKEEPING_INTERVAL_S = 3600.0
# /healthz reports the worker as not delivering once its loop has failed for this long.
LOOP_FAILURE_GRACE_S = 10.0
# A channel with this many queued messages gets digests: at about one message per second, a
# backlog longer than this would keep its newest state from Slack for as many seconds.
DIGEST_AFTER = 10
DIGEST_FETCH = 500  # queued alerts read per digest: more than render.py can fit in one message
PAUSE_PROBE_MAX_S = 60.0  # a fixed token or channel is noticed within this


@dataclass
class Pause:
    reason: str
    until: float
    delay: float


class Worker(threading.Thread):
    def __init__(self, store: Store, slack: Slack, *, max_attempts: int, retry_initial_s: float,
                 retry_max_s: float, channel_interval_s: float):
        super().__init__(name="delivery", daemon=True)
        self.store, self.slack = store, slack
        self.max_attempts = max_attempts
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.channel_interval_s = channel_interval_s
        self._wakeup = threading.Condition()
        self._stopping = False
        self._dirty = False
        self._pending_channels: set[str] = set()
        self._channel_free_at: dict[str, float] = {}
        self._paused_until = 0.0
        self._last_housekeeping = 0.0
        self._failing_since: float | None = None  # the loop's first failure in a row
        self._failure = ""
        # "slack", "faxplus" (a refused token) or "#channel"/"C…" (a channel a person must fix)
        self._pauses: dict[str, Pause] = {}

    def notify(self, channels: set[str]) -> None:
        """Called after a commit that queued messages for ``channels``.

        Wakes the worker only for a channel with nothing queued before: a message behind another
        one of its channel cannot be sent sooner than that one, for which the worker already
        waits. (Rescanning the queue on every accepted request tripled the accept p99.)
        """
        with self._wakeup:
            if not channels <= self._pending_channels:
                self._dirty = True
                self._wakeup.notify()

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()

    def problem(self) -> str | None:
        """Why nothing is being delivered (for /healthz), or None. Slack's own failures are not
        ours: they are retried and counted in alert_relay_delivery_failures_total."""
        if not self.is_alive():
            return "delivery worker stopped"
        since = self._failing_since
        if since is not None and time.time() - since >= LOOP_FAILURE_GRACE_S:
            return f"delivery loop failing for {time.time() - since:.0f} s: {self._failure}"
        return None

    def run(self) -> None:
        while True:
            with self._wakeup:
                if self._stopping:
                    return
                self._dirty = False  # a notify from here on makes the wait below return at once
            try:
                wait = self._step()
                self._failing_since = None
            except Exception as exc:  # the worker must outlive any bug in one delivery; the message stays queued
                log.exception("delivery loop error")
                self._failure = str(exc)[:200]
                if self._failing_since is None:
                    self._failing_since = time.time()
                wait = 1.0
            if wait > 0:
                with self._wakeup:
                    if not self._dirty and not self._stopping:
                        self._wakeup.wait(wait)

    def _pause_scopes(self, message: Message) -> list[str]:
        scopes = ["slack", message.channel]
        if message.kind == "fax":
            scopes.append("faxplus")
        return scopes

    def _step(self) -> float:
        """Send at most one message; return how long to wait before the next look (0: look again now)."""
        now = time.time()
        if now - self._last_housekeeping > HOUSEKEEPING_INTERVAL_S:
            self._last_housekeeping = now  # failed or not, tried again in an interval: delivery comes first
            try:
                self.store.forget_old_keys()
            except sqlite3.Error as exc:
                log.error("housekeeping failed", extra={"fields": {"step": "forget_old_keys", "error": describe_error(exc)}})
        if now < self._paused_until:
            return self._paused_until - now
        soonest = IDLE_WAKEUP_S
        heads = self.store.channel_heads()
        with self._wakeup:
            self._pending_channels = {message.channel for message in heads}
        for message in heads:
            paused = [self._pauses[s].until for s in self._pause_scopes(message) if s in self._pauses]
            ready_at = max([message.next_attempt, self._channel_free_at.get(message.channel, 0.0), *paused])
            if ready_at <= now:
                if "slack" in self._pauses:
                    self.slack.reload_token()
                self._deliver(message)
                return 0
            soonest = min(soonest, ready_at - now)
        return soonest

    def _deliver(self, message: Message) -> None:
        started = time.time()
        batch: list[Message] | None = None
        queued = 0
        if message.kind == "alert" and message.sending_since is None:
            queued = self.store.channel_depth(message.channel)
            if queued >= DIGEST_AFTER:
                batch = self.store.channel_batch(message.channel, DIGEST_FETCH)
        try:
            delivered = self.slack.send(message, batch=batch, queued=queued)
        except RateLimited as exc:
            if exc.channel:
                self._channel_free_at[message.channel] = time.time() + max(exc.retry_after, self.channel_interval_s)
            else:
                self._paused_until = time.time() + exc.retry_after
            metrics.RATE_LIMITED.inc()
            log.warning("rate limited", extra={"fields": {"retry_after_s": exc.retry_after, "channel": message.channel,
                                                          "all_channels": exc.channel is None}})
            return
        except Deferred as exc:
            self._channel_free_at[message.channel] = time.time() + exc.seconds
            log.info("delivery deferred", extra={"fields": {"id": message.id, "channel": message.channel,
                                                            "reason": str(exc), "retry_in_s": round(exc.seconds, 3)}})
            return
        except AuthFailed as exc:
            self._pause(exc.service, describe(exc), message)
            return
        except ChannelBlocked as exc:
            self._pause(message.channel, describe(exc), message)
            return
        except PermanentError as exc:
            self._failed(message, describe(exc), permanent=True)
        except Exception as exc:  # network errors, 5xx, unexpected answers: retry with backoff
            self._failed(message, describe(exc), permanent=False)
        else:
            self._resume(self._pause_scopes(message))
            if delivered > 1:
                metrics.DIGESTS.inc()
            metrics.DELIVERED.labels(message.kind).inc(delivered)
            metrics.DELIVERY_SECONDS.labels(message.kind).observe(time.time() - started)
            log.info("delivered", extra={"fields": {"id": message.id, "kind": message.kind, "channel": message.channel,
                                                    "attempts": message.attempts + 1, "messages": delivered}})
        finally:
            self._channel_free_at[message.channel] = max(self._channel_free_at.get(message.channel, 0.0),
                                                         time.time() + self.channel_interval_s)

    def _pause(self, scope: str, reason: str, message: Message) -> None:
        """Hold everything ``scope`` covers until a probe (the next send after ``delay``) succeeds."""
        previous = self._pauses.get(scope)
        delay = min(PAUSE_PROBE_MAX_S, self.retry_max_s, previous.delay * 2 if previous else self.retry_initial_s)
        self._pauses[scope] = Pause(reason, time.time() + delay, delay)
        self._update_pause_metrics()
        fields = {"scope": scope, "reason": reason, "probe_in_s": round(delay, 3), "id": message.id,
                  "channel": message.channel, "queued": self.store.queue_depth()}
        if previous is None or previous.reason != reason:
            what = "delivery paused for every channel" if scope == "slack" else (
                "fax delivery paused" if scope == "faxplus" else "channel paused")
            log.error(f"{what}: a person must fix it; nothing is dropped", extra={"fields": fields})
        else:
            log.debug("still paused", extra={"fields": fields})

    def _resume(self, scopes: list[str]) -> None:
        for scope in scopes:
            pause = self._pauses.pop(scope, None)
            if pause:
                log.warning("delivery resumed", extra={"fields": {"scope": scope, "was": pause.reason,
                                                                  "queued": self.store.queue_depth()}})
        self._update_pause_metrics()

    def _update_pause_metrics(self) -> None:
        for service in ("slack", "faxplus"):
            metrics.DELIVERY_PAUSED.labels(service).set(1 if service in self._pauses else 0)
        metrics.CHANNELS_BLOCKED.set(sum(1 for scope in self._pauses if scope not in ("slack", "faxplus")))

    def _failed(self, message: Message, error: str, permanent: bool) -> None:
        metrics.FAILURES.labels(message.kind).inc()
        attempts = message.attempts + 1
        if permanent or attempts >= self.max_attempts:
            self.store.failed(message, error, retry_at=None)
            log.error("dead letter", extra={"fields": {"id": message.id, "kind": message.kind,
                                                       "channel": message.channel, "attempts": attempts, "error": error}})
            return
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (attempts - 1))
        self.store.failed(message, error, retry_at=time.time() + delay)
        log.warning("delivery failed", extra={"fields": {"id": message.id, "kind": message.kind, "channel": message.channel,
                                                         "attempts": attempts, "retry_in_s": round(delay, 3), "error": error}})
