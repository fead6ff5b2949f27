"""The durable queue: SQLite in WAL mode, one file.

A notification is acknowledged only after the transaction that queues it commits (synchronous=FULL,
so a power cut after the 2xx loses nothing). The same transaction records its dedup key, so a
resend of an already-queued notification queues nothing. Messages of one channel are delivered in
queue order; one that keeps failing moves to `dead_letters` (counted in /metrics).

A message whose send was cut off (the process killed, a timeout) keeps `sending_since`: before
sending it again, the worker asks Slack whether it arrived (alert messages carry their queue id in
Slack message metadata), so that it is neither lost nor posted twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,               -- alert | fax
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,            -- JSON: what to send
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created REAL NOT NULL,
    sending_since REAL                -- set while a send's outcome is unknown
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created REAL NOT NULL,
    failed REAL NOT NULL,
    sending_since REAL                -- kept, so that a requeued message is looked for first
);
-- Keys of notifications already queued, so that resends are delivered once.
CREATE TABLE IF NOT EXISTS seen (
    dedup_key TEXT PRIMARY KEY,
    created REAL NOT NULL
);
-- The Slack message of each open alert group, updated and replied to when it resolves.
CREATE TABLE IF NOT EXISTS threads (
    thread_key TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    created REAL NOT NULL
);
"""

# How long a write waits for another writer (e.g. an operator's sqlite3 shell) before the request
# is answered 503, well within the sender's own timeout, so that it retries rather than hangs.
BUSY_TIMEOUT_S = 2.0

# Dedup keys older than this are forgotten; Alertmanager and FAX.PLUS retry within hours.
SEEN_RETENTION_S = 14 * 86400


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    next_attempt: float
    created: float
    sending_since: float | None  # a send of it started then, and whether it arrived is unknown


class Store:
    """Thread-safe access to the queue file; each thread gets its own SQLite connection."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        # SQLite allows one writer at a time; queuing in a Python lock is cheaper than busy-waiting.
        self._write_lock = threading.Lock()
        with self._write_lock:
            self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def enqueue(self, messages: list[tuple[str, str, str, dict[str, Any]]]) -> int:
        """Queue (dedup key, kind, channel, payload) messages whose key was not seen; how many were new.

        Returns only after the commit, so what it counts survives a crash.
        """
        now = time.time()
        db = self._db()
        queued = 0
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                for dedup_key, kind, channel, payload in messages:
                    if db.execute("INSERT OR IGNORE INTO seen (dedup_key, created) VALUES (?, ?)",
                                  (dedup_key, now)).rowcount:
                        db.execute("INSERT INTO messages (kind, channel, payload, created) VALUES (?, ?, ?, ?)",
                                   (kind, channel, json.dumps(payload), now))
                        queued += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return queued

    def channel_heads(self) -> list[Message]:
        """The oldest queued message of each channel: the only one of its channel that may be sent."""
        rows = self._db().execute(
            "SELECT id, kind, channel, payload, attempts, next_attempt, created, sending_since FROM messages "
            "WHERE id IN (SELECT MIN(id) FROM messages GROUP BY channel) ORDER BY id"
        ).fetchall()
        return [Message(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]

    def set_sending(self, message: Message, since: float | None) -> None:
        """Mark a message's send as under way since ``since`` (its outcome unknown until it is
        delivered or answered), or None once Slack answered that it did not arrive."""
        with self._write_lock:
            self._db().execute("UPDATE messages SET sending_since = ? WHERE id = ?", (since, message.id))

    def delivered(self, message: Message, thread: tuple[str, str, str] | None = None,
                  close_thread: str | None = None) -> None:
        """Remove a sent message; open (thread_key, channel_id, ts) or close a thread in the same commit."""
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM messages WHERE id = ?", (message.id,))
            if thread:
                db.execute(
                    "INSERT OR REPLACE INTO threads (thread_key, channel_id, ts, created) VALUES (?, ?, ?, ?)",
                    (*thread, time.time()),
                )
            if close_thread:
                db.execute("DELETE FROM threads WHERE thread_key = ?", (close_thread,))
            db.execute("COMMIT")

    def failed(self, message: Message, error: str, retry_at: float | None) -> None:
        """Count a failed attempt: retry at ``retry_at``, or move to the dead letters when None."""
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            if retry_at is None:
                db.execute(
                    "INSERT INTO dead_letters (id, kind, channel, payload, attempts, last_error, created, failed, sending_since) "
                    "SELECT id, kind, channel, payload, attempts + 1, ?, created, ?, sending_since FROM messages WHERE id = ?",
                    (error, time.time(), message.id),
                )
                db.execute("DELETE FROM messages WHERE id = ?", (message.id,))
            else:
                db.execute(
                    "UPDATE messages SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?",
                    (retry_at, error, message.id),
                )
            db.execute("COMMIT")

    def thread(self, thread_key: str) -> tuple[str, str] | None:
        """(channel_id, ts) of the open Slack message for an alert group."""
        row = self._db().execute("SELECT channel_id, ts FROM threads WHERE thread_key = ?", (thread_key,)).fetchone()
        return (row[0], row[1]) if row else None

    def queue_depth(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def dead_letter_count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

    def dead_letters(self) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT id, kind, channel, attempts, last_error FROM dead_letters ORDER BY id").fetchall()
        return [dict(zip(("id", "kind", "channel", "attempts", "last_error"), row)) for row in rows]

    def requeue_dead_letters(self) -> list[dict[str, Any]]:
        """Move every dead letter back to the queue under its old id (so ahead of younger messages of
        its channel), attempts reset; what was moved."""
        moved = self.dead_letters()
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO messages (id, kind, channel, payload, created, sending_since) "
                       "SELECT id, kind, channel, payload, created, sending_since FROM dead_letters")
            db.execute("DELETE FROM dead_letters")
            db.execute("COMMIT")
        return moved

    def forget_old_keys(self) -> None:
        with self._write_lock:
            self._db().execute("DELETE FROM seen WHERE created < ?", (time.time() - SEEN_RETENTION_S,))

    def ping(self) -> None:
        self._db().execute("SELECT 1").fetchone()
