"""Append-only file: every change is logged as the resulting state of the keys it touched.

A write command is logged as `SET key value [PXAT ms]` or `DEL key` for each key it touched (and
FLUSHALL for flushes), in RESP like Redis's AOF, so expiry times are absolute and replaying the
file cannot drift. Expired and evicted keys are logged as DEL.

fsync: `always` writes and fsyncs before the replies of a batch are sent; `everysec` writes after
each batch and fsyncs once a second off the event loop; `no` leaves it to the kernel.

When the file has doubled since the last rewrite (and is over a minimum size), a forked child
writes the current dataset to a new file while the server goes on; changes made meanwhile are
kept in memory and appended before the new file replaces the old one.

At start the file is replayed, strictly: every record must be a RESP array of bulk strings,
each bulk followed by CRLF, and every command must succeed. A last record cut short (power loss)
is logged, cut off the file and skipped; damage before it stops the server with the offset of
the bad record and the command that repairs the file (`toy-redis --check-aof FILE --fix`, which
backs the file up and cuts it at that record, like redis-check-aof --fix).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import shutil
import time
from dataclasses import dataclass

from . import logs
from .protocol import parse_int

AUTO_REWRITE_MIN_SIZE = 64 * 1024 * 1024
AUTO_REWRITE_PERCENTAGE = 100
BIG_VALUE = 64 * 1024
IOV_MAX = 1024
# In the data directory (`dir`); backups (homelab.backup) copy it from there.
FILENAME = "appendonly.aof"
# A count or length line is at most this long ("$" or "*", 20 digits, CRLF).
MAX_HEADER = 24
_NOT_ZERO = re.compile(rb"[^\x00]")


@dataclass(frozen=True)
class Problem:
    """Where reading stopped before the end of the file: a torn last record, or damage."""

    offset: int
    reason: str
    torn: bool


class AofDamaged(Exception):
    """Damage before the last record: one line with the offset and how to repair."""

    def __init__(self, path: str, problem: Problem, records: int):
        self.path, self.problem, self.records = path, problem, records
        super().__init__(
            f"{path}: bad record at byte {problem.offset} ({problem.reason}); to keep the {records} "
            f"records before it, run: toy-redis --check-aof {path} --fix (it backs the file up first)"
        )


class _Stop(Exception):
    def __init__(self, offset: int, reason: str, torn: bool = False):
        self.problem = Problem(offset, reason, torn)


def _header(data, pos: int, marker: int, what: str, start: int) -> tuple[int, int]:
    """A `*N` or `$N` line at pos: (N, where the next item starts)."""
    if pos >= len(data):
        raise _Stop(start, "file ends inside the record", torn=True)
    if data[pos] != marker:
        raise _Stop(start, f"expected '{chr(marker)}', got {data[pos : pos + 1]!r}")
    line_end = data.find(b"\r\n", pos, pos + MAX_HEADER)
    if line_end < 0:
        if len(data) - pos < MAX_HEADER and data.find(b"\n", pos) < 0:
            raise _Stop(start, "file ends inside the record", torn=True)
        raise _Stop(start, f"bad {what} line")
    value = parse_int(data[pos + 1 : line_end])
    if value is None or value < (1 if marker == 42 else 0):
        raise _Stop(start, f"bad {what} {data[pos + 1 : line_end]!r}")
    return value, line_end + 2


def _records(data):
    """(offset, argv) of each record in data; raises _Stop where a record is torn or bad."""
    pos, size = 0, len(data)
    while pos < size:
        start = pos
        count, pos = _header(data, pos, 42, "multibulk length", start)
        argv = []
        for _ in range(count):
            length, pos = _header(data, pos, 36, "bulk length", start)
            end = pos + length
            if end + 2 > size:
                raise _Stop(start, "file ends inside the record", torn=True)
            if data[end : end + 2] != b"\r\n":
                raise _Stop(start, "bulk string not followed by CRLF")
            argv.append(data[pos:end])
            pos = end + 2
        yield start, argv


def replay(path: str, apply) -> tuple[int, Problem | None]:
    """Replay the file through apply(argv) -> reply: (records applied, where it stopped or None).

    A command whose reply is an error counts as damage at its record."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return 0, None
    records = 0
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return 0, None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                for offset, argv in _records(data):
                    reply = apply(argv)
                    if reply[:1] == b"-":
                        error = reply[1:].split(b"\r\n", 1)[0].decode(errors="replace")
                        raise _Stop(offset, f"{argv[0].decode(errors='replace')} failed: {error}")
                    records += 1
            except _Stop as stop:
                problem = stop.problem
                if not problem.torn and _NOT_ZERO.search(data, problem.offset) is None:
                    # Zeros after the last record: a torn write the filesystem padded.
                    problem = Problem(problem.offset, "zeros after the last record", torn=True)
                return records, problem
    return records, None


def repair(path: str, problem: Problem) -> str:
    """Copy the file to a backup, then cut it at the bad record; the backup's path."""
    backup = f"{path}.bak-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.copy2(path, backup)
    with open(path, "r+b") as handle:
        handle.truncate(problem.offset)
        os.fsync(handle.fileno())
    return backup


def encode_set(key: bytes, value: bytes, when: int | None) -> tuple[bytes, ...]:
    """The SET record as parts to write one after the other: a big value is its own part, so
    logging it does not copy it (a 512 MB SET would otherwise cost another 512 MB)."""
    if when is None:
        head = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value))
        tail = b"\r\n"
    else:
        stamp = b"%d" % when
        head = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value))
        tail = b"\r\n$4\r\nPXAT\r\n$%d\r\n%s\r\n" % (len(stamp), stamp)
    if len(value) >= BIG_VALUE:
        return head, value, tail
    return (head + value + tail,)


def write_all(fd: int, parts: list[bytes]) -> int:
    """Write parts in order with writev (no joined copy); the bytes written."""
    total = 0
    while parts:
        batch = parts[:IOV_MAX]
        written = os.writev(fd, batch)
        total += written
        done = 0
        while done < len(batch) and written >= len(batch[done]):
            written -= len(batch[done])
            done += 1
        parts = parts[done:]
        if written:
            parts[0] = memoryview(parts[0])[written:]
    return total


def encode_del(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(key), key)


FLUSHALL = b"*1\r\n$8\r\nFLUSHALL\r\n"


class AppendOnlyFile:
    def __init__(self, directory: str, fsync: str, filename: str = FILENAME):
        self.path = os.path.join(directory, filename)
        self.directory = directory
        self.fsync_mode = fsync
        self.buffer: list[bytes] = []
        self.fd: int | None = None
        self.size = 0
        self.base_size = 0
        self.fsync_in_flight = False
        self.rewrite_pid: int | None = None
        self.rewrite_buffer: list[bytes] | None = None
        self.rewrites = 0
        self.last_rewrite_status = "ok"
        self.last_write_status = "ok"
        self.min_rewrite_size = AUTO_REWRITE_MIN_SIZE

    # -- load ----------------------------------------------------------------------------------

    def load(self, apply) -> int:
        """Replay the file through apply(argv); returns the number of records applied.

        A torn last record is cut off; damage before it raises AofDamaged."""
        records, problem = replay(self.path, apply)
        if problem is not None:
            if not problem.torn:
                raise AofDamaged(self.path, problem, records)
            self._truncate(problem.offset, records)
        return records

    def _truncate(self, offset: int, records: int) -> None:
        size = os.path.getsize(self.path)
        logs.warning("aof_truncated", path=self.path, valid_bytes=offset, dropped_bytes=size - offset, records=records)
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())

    # -- append --------------------------------------------------------------------------------

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.base_size = self.size

    def feed(self, *parts: bytes) -> None:
        self.buffer += parts
        if self.rewrite_buffer is not None:
            self.rewrite_buffer += parts

    def flush(self) -> None:
        """Write what the last batch of commands changed; fsync too if appendfsync is always."""
        if not self.buffer or self.fd is None:
            return
        parts, self.buffer = self.buffer, []
        try:
            self.size += write_all(self.fd, parts)
            if self.fsync_mode == "always":
                os.fsync(self.fd)
            self.last_write_status = "ok"
        except OSError as exc:
            self.last_write_status = "err"
            logs.error("aof_write_failed", path=self.path, error=exc.strerror)
            raise

    def fsync_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """everysec: fsync in a worker thread so a slow disk does not stall clients."""
        if self.fsync_mode != "everysec" or self.fd is None or self.fsync_in_flight:
            return
        self.fsync_in_flight = True
        fd = self.fd

        def done(future):
            self.fsync_in_flight = False
            if future.exception() is not None:
                logs.error("aof_fsync_failed", path=self.path, error=str(future.exception()))

        loop.run_in_executor(None, os.fsync, fd).add_done_callback(done)

    def close(self) -> None:
        if self.fd is None:
            return
        self.flush()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None

    # -- rewrite -------------------------------------------------------------------------------

    def needs_rewrite(self) -> bool:
        return (
            self.rewrite_pid is None
            and self.size >= self.min_rewrite_size
            and self.size > self.base_size * (100 + AUTO_REWRITE_PERCENTAGE) // 100
        )

    def temp_path(self, pid: int) -> str:
        return os.path.join(self.directory, f"temp-rewriteaof-{pid}.aof")

    def start_rewrite(self, db) -> bool:
        if self.rewrite_pid is not None:
            return False
        self.flush()
        pid = os.fork()
        if pid == 0:  # child: write the dataset, then leave without running any parent cleanup
            code = 1
            try:
                write_snapshot(db, self.temp_path(os.getpid()))
                code = 0
            finally:
                os._exit(code)
        self.rewrite_pid = pid
        self.rewrite_buffer = []
        logs.info("aof_rewrite_started", path=self.path, child_pid=pid, size=self.size)
        return True

    def poll_rewrite(self) -> None:
        """Finish a rewrite whose child has exited."""
        if self.rewrite_pid is None:
            return
        pid, status = os.waitpid(self.rewrite_pid, os.WNOHANG)
        if pid == 0:
            return
        temp = self.temp_path(self.rewrite_pid)
        buffered, self.rewrite_buffer, self.rewrite_pid = self.rewrite_buffer or [], None, None
        if os.waitstatus_to_exitcode(status) != 0:
            self.last_rewrite_status = "err"
            logs.error("aof_rewrite_failed", path=self.path, exit_status=os.waitstatus_to_exitcode(status))
            if os.path.exists(temp):
                os.unlink(temp)
            return
        self.flush()
        with open(temp, "ab") as handle:
            handle.flush()
            write_all(handle.fileno(), buffered)
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        old_fd = self.fd
        self.open()
        if old_fd is not None:
            os.close(old_fd)
        self.rewrites += 1
        self.last_rewrite_status = "ok"
        logs.info("aof_rewrite_done", path=self.path, size=self.size)

    def abort_rewrite(self) -> None:
        if self.rewrite_pid is not None:
            try:
                os.kill(self.rewrite_pid, 9)
                os.waitpid(self.rewrite_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            temp = self.temp_path(self.rewrite_pid)
            if os.path.exists(temp):
                os.unlink(temp)
            self.rewrite_pid = None
            self.rewrite_buffer = None


def write_snapshot(db, path: str) -> None:
    """The dataset as SET records with absolute expiry times (expired keys left out)."""
    from .keyspace import now_ms

    now = now_ms()
    expires = db.expires
    with open(path, "wb", buffering=1024 * 1024) as handle:
        write = handle.write
        for key, value in db.data.items():
            when = expires.get(key)
            if when is not None and when <= now:
                continue
            for part in encode_set(key, value, when):
                write(part)
        handle.flush()
        os.fsync(handle.fileno())
