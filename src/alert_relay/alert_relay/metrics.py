"""The relay's Prometheus metrics (served at /metrics on the webhook port)."""

from __future__ import annotations

import tracemalloc
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from alert_relay.store import Store

KINDS = ("alert", "fax")

ACCEPTED = Counter("alert_relay_accepted", "Notifications queued (repeats not counted)", ["kind"])
DUPLICATES = Counter("alert_relay_duplicates", "Notifications already queued before (resends), not queued again", ["kind"])
REJECTED = Counter("alert_relay_rejected_requests", "Requests refused", ["reason"])
DROPPED_FAXES = Counter("alert_relay_dropped_faxes", "Faxes from senders no route lists")
DELIVERED = Counter("alert_relay_delivered", "Messages delivered to Slack", ["kind"])
FAILURES = Counter("alert_relay_delivery_failures", "Failed delivery attempts (429s not counted)", ["kind"])
RATE_LIMITED = Counter("alert_relay_rate_limited", "429 answers from Slack or FAX.PLUS")
DELIVERY_SECONDS = Histogram("alert_relay_delivery_seconds", "Time to deliver one message", ["kind"])
ACCEPT_SECONDS = Histogram(
    "alert_relay_accept_seconds", "Time from request to durable queueing",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
QUEUE_WRITE_ERRORS = Counter("alert_relay_queue_write_errors", "Failed writes to the queue file, by cause", ["cause"])
HTTP_CONNECTIONS = Gauge("alert_relay_http_connections", "Open HTTP connections")
HTTP_CONNECTIONS_CLOSED = Counter(
    "alert_relay_http_connections_closed", "Connections the relay closed on a peer, by reason", ["reason"])
HTTP_CLOSE_REASONS = ("header_timeout", "body_timeout", "idle_timeout", "send_timeout", "evicted", "over_limit")
LOGIN_CHECKS = Gauge("alert_relay_login_checks", "Logins of web_config_file waiting for or in their bcrypt check")
ALLOCATION_TRACING = Gauge("alert_relay_allocation_tracing",
                           "1 while tracemalloc traces allocations for GET /debug/allocations (off otherwise)")
ALLOCATION_TRACING.set_function(tracemalloc.is_tracing)
QUEUE_DEPTH = Gauge("alert_relay_queue_depth", "Messages waiting for delivery")
DEAD_LETTERS = Gauge("alert_relay_dead_letters", "Messages given up on (see the dead_letters table)")

for _kind in KINDS:  # export zeros from the start, so rate() and alert rules see the series
    for _counter in (ACCEPTED, DUPLICATES, DELIVERED, FAILURES):
        _counter.labels(_kind)
for _reason in HTTP_CLOSE_REASONS:
    HTTP_CONNECTIONS_CLOSED.labels(_reason)


def watch(store: "Store") -> None:
    """Read the queue gauges from the queue file at scrape time, so they survive restarts."""
    QUEUE_DEPTH.set_function(store.queue_depth)
    DEAD_LETTERS.set_function(store.dead_letter_count)

# Delivery that waits for a person (worker.py): a refused token pauses a service, a channel the
# bot cannot post to waits alone; nothing of it is dead-lettered.
DELIVERY_PAUSED = Gauge("alert_relay_delivery_paused",
                        "1 while the service refuses the relay's token or its scopes: delivery through it waits",
                        ["service"])
CHANNELS_BLOCKED = Gauge("alert_relay_channels_blocked",
                         "Channels whose messages wait for a person (bot not in the channel, archived, read-only)")
DIGESTS = Counter("alert_relay_digests", "Messages that delivered several queued notifications of one channel at once")
for _service in ("slack", "faxplus"):
    DELIVERY_PAUSED.labels(_service).set(0)
