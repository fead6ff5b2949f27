"""The durable queue: SQLite in WAL mode, one file.

A notification is acknowledged only after the transaction that queues it commits (synchronous=FULL,
so a power cut after the 2xx loses nothing). The same transaction records its dedup key, so a
resend of an already-queued notification queues nothing. Messages of one channel are delivered in
queue order; one that keeps failing moves to `dead_letters` (counted in /metrics).

The file is created 0600. A queue the relay cannot use (unopenable, read-only, on a full disk,
corrupt) stops the start with one line naming the path and the cause (check_queue), before anything
is written to it. While running, a failed write rolls back, is counted by cause in
`alert_relay_queue_write_errors_total` and shows in /healthz until a write succeeds again.

A message whose send was cut off (the process killed, a timeout) keeps `sending_since`: before
sending it again, the worker asks Slack whether it arrived (alert messages carry their queue id in
Slack message metadata), so that it is neither lost nor posted twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alert_relay import metrics

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
-- One row rewritten by /healthz's write probe.
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed REAL NOT NULL
);
"""

# How long a write waits for another writer (e.g. an operator's sqlite3 shell) before the request
# is answered 503, well within the sender's own timeout, so that it retries rather than hangs.
BUSY_TIMEOUT_S = 2.0

# The queue's mode (SQLite gives its -wal and -shm the same); roles.alert_relay deploys it.
QUEUE_MODE = 0o600

# Dedup keys older than this are forgotten; Alertmanager and FAX.PLUS retry within hours.
SEEN_RETENTION_S = 14 * 86400

# Below this much free space a start is refused: SQLite needs room to grow the WAL for the first
# commits, and a relay that starts only to answer every POST 503 hides the cause.
MIN_FREE_BYTES = 1 << 20

# /healthz writes to the queue at most this often, however often it is asked.
PROBE_INTERVAL_S = 1.0

# Why a queue write failed, from SQLite's primary result code; the label of the metric below.
WRITE_ERROR_CAUSES = {
    "SQLITE_FULL": "disk_full", "SQLITE_READONLY": "read_only", "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt", "SQLITE_BUSY": "busy", "SQLITE_LOCKED": "busy", "SQLITE_IOERR": "io_error",
    "SQLITE_CANTOPEN": "cannot_open",
}
CAUSE_TEXT = {"disk_full": "disk full", "read_only": "read-only", "corrupt": "database is corrupt",
              "busy": "locked by another process", "io_error": "I/O error", "cannot_open": "cannot open it",
              "other": "database error"}
for _cause in CAUSE_TEXT:  # zeros from the start, so alert rules see the series
    metrics.QUEUE_WRITE_ERRORS.labels(_cause)


def write_error_cause(exc: sqlite3.Error) -> str:
    """disk_full, read_only, corrupt, busy, io_error, cannot_open or other."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for code, cause in WRITE_ERROR_CAUSES.items():
        if name == code or name.startswith(code + "_"):
            return cause
    return "other"


def describe_error(exc: BaseException) -> str:
    """One line: the cause in words, then what SQLite or the OS said."""
    if isinstance(exc, sqlite3.Error):
        return f"{CAUSE_TEXT[write_error_cause(exc)]} ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class QueueError(Exception):
    """The queue file cannot be used: one line naming it and the cause."""

    def __init__(self, path: str | Path, cause: str):
        self.path, self.cause = str(path), cause
        super().__init__(f"{path}: {cause}")


def check_queue(path: str | Path) -> None:
    """Raise QueueError unless the relay can open, read and write the queue at ``path``.

    Changes nothing: an existing file is opened read-only (immutable when no WAL file shows a
    running relay, so not even a -shm file is made) and checked with SQLite's quick_check.
    Run as root (a deploy's --check-config), the file's owner bits are what is checked.
    """
    path = Path(path)
    folder = path.parent
    try:
        fs = os.statvfs(folder)
    except OSError as exc:
        raise QueueError(path, f"cannot open its folder ({exc.strerror})") from None
    if fs.f_flag & os.ST_RDONLY:
        raise QueueError(path, "read-only file system")
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise QueueError(path, f"disk full ({free} bytes free, at least {MIN_FREE_BYTES} needed)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise QueueError(path, f"its folder {folder} is not writable (SQLite creates its -wal and -shm files there)")
    try:
        info = path.stat()
    except FileNotFoundError:
        return  # created at start
    except OSError as exc:
        raise QueueError(path, f"cannot open it ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise QueueError(path, "not a regular file")
    if not os.access(path, os.R_OK | os.W_OK) or not info.st_mode & stat.S_IWUSR:
        raise QueueError(path, f"read-only (mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}): "
                               "expected the service user to be able to read and write it")
    running = Path(f"{path}-wal").exists()
    uri = f"file:{quote(str(path))}?{'mode=ro' if running else 'immutable=1'}"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise QueueError(path, f"{describe_error(exc)}: move it aside (keep it for `sqlite3 FILE .recover`)") from None
    if problems != ["ok"]:
        first = " ".join(problems[0].split())  # SQLite's report spans lines
        raise QueueError(path, f"database is corrupt (quick_check: {first}): move it aside "
                               "(keep it for `sqlite3 FILE .recover`)")


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
        # Why the last write failed, until one succeeds; the probe's apart, so that a probe that
        # succeeds does not hide a damaged table every real write fails on.
        self._write_problem: str | None = None
        self._probe_problem: str | None = None
        self._probed_at = 0.0
        try:
            # 0600 before SQLite creates it (SQLite would use 0644); its -wal and -shm copy the mode.
            # A queue an older relay created 0644 is tightened.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, QUEUE_MODE)
            try:
                info = os.fstat(fd)
                if info.st_mode & 0o077 and info.st_uid == os.geteuid():
                    os.fchmod(fd, QUEUE_MODE)
            finally:
                os.close(fd)
            with self._write_lock:
                self._db().executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise QueueError(self.path, describe_error(exc)) from None

    @contextmanager
    def _writing(self, probe: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed, or rolled back and its cause counted and kept."""
        db = self._db()
        with self._write_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk at COMMIT does); a second
                # ROLLBACK would replace the real cause with "no transaction is active".
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    metrics.QUEUE_WRITE_ERRORS.labels(write_error_cause(exc)).inc()
                    setattr(self, "_probe_problem" if probe else "_write_problem", describe_error(exc))
                raise
            setattr(self, "_probe_problem" if probe else "_write_problem", None)

    def close(self) -> None:
        """Close this thread's connection (the last one to close checkpoints and removes the WAL)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

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
        queued = 0
        with self._writing() as db:
            for dedup_key, kind, channel, payload in messages:
                if db.execute("INSERT OR IGNORE INTO seen (dedup_key, created) VALUES (?, ?)",
                              (dedup_key, now)).rowcount:
                    db.execute("INSERT INTO messages (kind, channel, payload, created) VALUES (?, ?, ?, ?)",
                               (kind, channel, json.dumps(payload), now))
                    queued += 1
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
        with self._writing() as db:
            db.execute("UPDATE messages SET sending_since = ? WHERE id = ?", (since, message.id))

    def delivered(self, message: Message, thread: tuple[str, str, str] | None = None,
                  close_thread: str | None = None) -> None:
        """Remove a sent message; open (thread_key, channel_id, ts) or close a thread in the same commit."""
        with self._writing() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message.id,))
            if thread:
                db.execute(
                    "INSERT OR REPLACE INTO threads (thread_key, channel_id, ts, created) VALUES (?, ?, ?, ?)",
                    (*thread, time.time()),
                )
            if close_thread:
                db.execute("DELETE FROM threads WHERE thread_key = ?", (close_thread,))

    def failed(self, message: Message, error: str, retry_at: float | None) -> None:
        """Count a failed attempt: retry at ``retry_at``, or move to the dead letters when None."""
        with self._writing() as db:
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
        with self._writing() as db:
            db.execute("INSERT INTO messages (id, kind, channel, payload, created, sending_since) "
                       "SELECT id, kind, channel, payload, created, sending_since FROM dead_letters")
            db.execute("DELETE FROM dead_letters")
        return moved

    def forget_old_keys(self) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM seen WHERE created < ?", (time.time() - SEEN_RETENTION_S,))

    def writable(self) -> str | None:
        """None when the queue takes writes, else why not: a probe write (at most once per
        PROBE_INTERVAL_S) and the outcome of the last real write must both have succeeded."""
        now = time.monotonic()
        if now - self._probed_at >= PROBE_INTERVAL_S:
            self._probed_at = now
            try:
                with self._writing(probe=True) as db:
                    db.execute("INSERT OR REPLACE INTO health (id, probed) VALUES (1, ?)", (time.time(),))
            except sqlite3.Error:
                pass  # kept in _probe_problem
        return self._probe_problem or self._write_problem

    # A channel's backlog, for digests (worker.py): several queued alerts delivered as one message.
    def channel_depth(self, channel: str) -> int:
        return self._db().execute("SELECT COUNT(*) FROM messages WHERE channel = ?", (channel,)).fetchone()[0]

    def channel_batch(self, channel: str, limit: int) -> list[Message]:
        """The channel's oldest queued alerts, in order, up to its first fax (delivered on its own)."""
        rows = self._db().execute(
            "SELECT id, kind, channel, payload, attempts, next_attempt, created, sending_since FROM messages "
            "WHERE channel = ? ORDER BY id LIMIT ?", (channel, limit)).fetchall()
        batch = []
        for r in rows:
            if r[1] != "alert":
                break
            batch.append(Message(r[0], r[1], r[2], json.loads(r[3]), *r[4:]))
        return batch

    def delivered_batch(self, messages: list[Message], close_threads: list[str]) -> None:
        """Remove messages delivered together (a digest) and close the threads of resolved groups, in one commit."""
        with self._writing() as db:
            db.executemany("DELETE FROM messages WHERE id = ?", [(m.id,) for m in messages])
            db.executemany("DELETE FROM threads WHERE thread_key = ?", [(key,) for key in close_threads])
