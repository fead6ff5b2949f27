"""Append-only file: every change is logged as the resulting state of the keys it touched.

A write command is logged as `SET key value [PXAT ms]` or `DEL key` for each key it touched (and
FLUSHALL for flushes), in RESP like Redis's AOF, so expiry times are absolute and replaying the
file cannot drift. Expired and evicted keys are logged as DEL.

fsync: `always` writes and fsyncs before the replies of a batch are sent; `everysec` writes after
each batch and fsyncs once a second off the event loop; `no` leaves it to the kernel.

When the file has doubled since the last rewrite (and is over a minimum size), a forked child
writes the current dataset to a new file while the server goes on; changes made meanwhile are
kept in memory and appended before the new file replaces the old one.

At start the file is replayed. A last record cut short (power loss) is logged, cut off the file
and skipped; damage before the last record stops the server with the offset.
"""

from __future__ import annotations

import asyncio
import os

from . import logs
from .protocol import RequestParser

AUTO_REWRITE_MIN_SIZE = 64 * 1024 * 1024
AUTO_REWRITE_PERCENTAGE = 100
LOAD_CHUNK = 4 * 1024 * 1024


class AofCorrupt(Exception):
    pass


def encode_set(key: bytes, value: bytes, when: int | None) -> bytes:
    if when is None:
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
    stamp = b"%d" % when
    return b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$4\r\nPXAT\r\n$%d\r\n%s\r\n" % (
        len(key), key, len(value), value, len(stamp), stamp,
    )


def encode_del(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(key), key)


FLUSHALL = b"*1\r\n$8\r\nFLUSHALL\r\n"


class AppendOnlyFile:
    def __init__(self, directory: str, fsync: str, filename: str = "appendonly.aof"):
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
        """Replay the file through apply(argv); returns the number of records applied."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return 0
        parser = RequestParser(max_bulk_len=2**62, max_query_buffer=2**62)
        offset = 0  # bytes consumed by complete records
        records = 0
        with handle:
            while True:
                chunk = handle.read(LOAD_CHUNK)
                if not chunk:
                    break
                before = parser.pending()
                commands, error = parser.feed(chunk)
                for argv in commands:
                    apply(argv)
                    records += 1
                if error is not None:
                    bad_at = offset + parser.error_at
                    handle.seek(bad_at)
                    if not handle.read().strip(b"\x00"):
                        # Zeros after the last record: a torn write the filesystem padded.
                        self._truncate(bad_at, records)
                        return records
                    raise AofCorrupt(f"{self.path}: bad record at byte {bad_at} ({error}); fix or move the file")
                offset += before + len(chunk) - parser.pending()
        if parser.pending():
            self._truncate(offset, records)
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

    def feed(self, record: bytes) -> None:
        self.buffer.append(record)
        if self.rewrite_buffer is not None:
            self.rewrite_buffer.append(record)

    def flush(self) -> None:
        """Write what the last batch of commands changed; fsync too if appendfsync is always."""
        if not self.buffer or self.fd is None:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            self.size += len(data)
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
            handle.write(b"".join(buffered))
            handle.flush()
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
            write(encode_set(key, value, when))
        handle.flush()
        os.fsync(handle.fileno())
