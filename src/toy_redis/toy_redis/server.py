"""The server: one thread, one event loop, no locks. Command dispatch (execute, advance), the
statistics it keeps, the periodic task (expiry, freeing, AOF upkeep) and start and shutdown.
Connections are in connection.py, INFO in info.py, CONFIG in runtime_config.py."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from bisect import bisect_left
from collections import deque
from time import perf_counter
from types import GeneratorType

from pprof_sampler.allocations import AllocationTracing
from service_kit.crowd import Unproven
from service_kit.tls import ReloadingContext

from . import __version__, errors, logs
from .aof import FLUSHALL, AppendOnlyFile, encode_del, encode_set
from .commands import COMMANDS, Command
from .config import Config
from .connection import WRITE_HIGH_WATER, Connection, LoaderConnection
from .keyspace import Keyspace
from .metrics import LATENCY_BUCKETS, make_registry, serve_metrics
from .protocol import ReplyError, encode, error_line
from .tls import listen_tls

REDIS_VERSION = "7.0.15"
FIRST_BUCKET = LATENCY_BUCKETS[0]
HZ = 10
# Time the active expiry cycle, or freeing what a flush dropped, may hold the loop before
# letting clients in again.
EXPIRE_SLICE_S = 0.010
FREE_SLICE_S = 0.005
# How often clients are checked against `timeout` and `auth_timeout` (whole seconds, as Redis's).
TIMEOUT_CHECK_S = 1.0
# Commands whose arguments are secrets: never in the slow log or the logs.
REDACTED = {b"auth", b"hello", b"migrate"}
NOAUTH = error_line(errors.NOAUTH)
OOM = error_line(errors.OOM)


def _libc_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


# Values over 512 bytes live in glibc's heap, which keeps freed memory unless asked to give it back.
malloc_trim = _libc_malloc_trim()
# Give memory back to the system once this much of the dataset has been freed.
TRIM_AFTER_FREED_BYTES = 16 * 1024 * 1024


class Server:
    def __init__(self, config: Config, config_file: str | None = None, requirepass: bytes | None = None,
                 tls: ReloadingContext | None = None, metrics_users: dict[str, bytes] | None = None):
        self.config = config
        # The metrics endpoint's logins (config.read_metrics_users): name -> bcrypt hash.
        self.metrics_users = metrics_users
        # The TLS listeners' context (tls.reloading_context), made by the caller so a bad file stops the start.
        self.tls = tls
        # Read from config.requirepass_file by the caller; never part of the settings themselves.
        self.requirepass = requirepass
        self.config_file = config_file
        self.redis_version = REDIS_VERSION
        self.run_id = os.urandom(20).hex()
        self.hz = HZ
        self.db = Keyspace(config.maxmemory_policy)
        self.db.on_delete = self._log_delete
        self.commands = COMMANDS
        # Names as clients send them: lower case and upper case hit directly, others are lowered.
        self.lookup = {**COMMANDS, **{name.upper(): cmd for name, cmd in COMMANDS.items()}}
        self.clients: dict[int, Connection] = {}
        # Clients that have not authenticated yet (while a password is required), by peer address.
        self.unauthenticated = Unproven()
        # TLS connections accepted whose handshake is not done (tls.Handshake); they count as clients.
        self.handshakes: set = set()
        self.next_client_id = 0
        self.maxclients = config.maxclients
        self.timeout = config.timeout
        self.auth_timeout = config.auth_timeout
        self._next_timeout_check = 0.0
        self.maxmemory = config.maxmemory
        self.slowlog_slower_than_us = config.slowlog_log_slower_than_us
        self.slowlog: deque = deque(maxlen=config.slowlog_max_len)
        self.allocations = AllocationTracing(lambda: self.loop)
        self.slowlog_next_id = 0
        self.proto_max_bulk_len = 512 * 1024 * 1024
        self.client_query_buffer_limit = 1024**3
        self.client_output_buffer_limit = 256 * 1024 * 1024
        self.aof: AppendOnlyFile | None = None
        self.dirty = 0
        self.shutting_down = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listener = None
        self.tls_listener = None
        self.metrics_listener = None
        self.stopped: asyncio.Future | None = None
        self.started_at = time.time()
        self.event_loop_lag = 0.0
        self._expire_pending = False
        self._free_pending = False
        self._cron_expected = 0.0
        self._last_fsync = 0.0
        self._ops_samples: deque = deque(maxlen=16)
        self._used_at_trim = 0
        self.port = config.port
        self.tls_port = config.tls_port
        self.metrics_port = config.metrics_port
        self.reset_stats()

    # -- statistics ----------------------------------------------------------------------------

    def reset_stats(self) -> None:
        self.error_counts: dict[str, int] = {}
        self.rejected_connections = 0
        self.total_connections = 0
        self.net_input_bytes = 0
        self.net_output_bytes = 0
        self.db.hits = self.db.misses = 0
        self.db.expired_keys = 0
        self.db.evicted_keys = 0
        self.unknown_calls = 0
        for cmd in self.commands.values():
            cmd.calls = cmd.failed_calls = 0
            cmd.seconds_total = 0.0
            cmd.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def make_room(self) -> bool:
        """Whether a new connection fits under maxclients (TLS handshakes under way count). At
        the limit, a connection that has not authenticated makes room (service_kit.crowd.Unproven picks
        which), so strangers cannot lock out clients that have the password; with none to push
        out, there is no room and the newcomer is refused, as by Redis."""
        if len(self.clients) + len(self.handshakes) < self.maxclients:
            return True
        pushed_out = self.unauthenticated.push_out()
        if pushed_out is None:
            return False
        pushed_out[1].refuse()
        return True

    def count_error(self, kind: str) -> None:
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    def command_stats(self) -> list[Command]:
        return list(self.commands.values())

    # -- command execution ---------------------------------------------------------------------

    def call(self, conn, argv: list[bytes]) -> bytes:
        """Run one command to the end, without yielding to the loop; its reply."""
        parts = self.execute(conn, [argv])
        while conn.job is not None:
            parts.append(self.advance(conn, conn.job)[0])
        return b"".join(parts)

    def execute(self, conn, commands: list[list[bytes]]) -> list[bytes]:
        """Run commands in order; their replies. Stops after a command that closes the connection
        or works in slices, or once WRITE_HIGH_WATER bytes of replies are ready (the caller keeps
        the rest). Written out in one loop: it runs for every command of every pipeline."""
        lookup = self.lookup
        replies = []
        append = replies.append
        produced = 0
        for argv in commands:
            name = argv[0]
            cmd = lookup.get(name)
            if cmd is None:
                cmd = lookup.get(name.lower())
            n = len(argv)
            if cmd is None:
                reply = self._unknown(argv)
            elif (cmd.arity > 0 and n != cmd.arity) or n < -cmd.arity:
                self.count_error("wrong_arity")
                reply = error_line(errors.wrong_arity(cmd.name))
            elif not conn.authenticated and not cmd.no_auth:
                self.count_error("noauth")
                reply = NOAUTH
            elif (self.maxmemory and cmd.denyoom and self.db.used_memory > self.maxmemory
                  and not self.db.evict(self.maxmemory)):
                self.count_error("oom")
                reply = OOM
            else:
                conn.last_command = cmd.name
                start = perf_counter()
                try:
                    reply = cmd.handler(conn, argv)
                except Exception as exc:
                    reply = self.failure(cmd.name, exc)
                    cmd.failed_calls += 1
                else:
                    if cmd.is_write:
                        self.dirty += 1
                        if self.aof is not None:
                            self._log_write(cmd, argv)
                if reply.__class__ is GeneratorType:
                    # Works in slices: what it sends now; unless finished, conn.job holds it. Its
                    # time runs until its last slice (advance), as its client waits that long.
                    conn.job_timing = (cmd, argv, start)
                    reply = self.advance(conn, reply)[0]
                else:
                    self._timed(conn, cmd, argv, perf_counter() - start)
                    if reply.__class__ is not bytes:
                        reply = encode(reply, conn.resp3)
            append(reply)
            if conn.close_after_reply or conn.job is not None:
                break
            produced += len(reply)
            if produced > WRITE_HIGH_WATER:
                break
        return replies

    def advance(self, conn, job: GeneratorType) -> tuple[bytes, bool]:
        """Run a command that works in slices until it yields or returns: (output, finished).

        The command is a generator. It yields None to let other clients in before its next
        slice, or bytes to send as the next part of its reply (a big reply is not built in
        one piece, whose allocation alone would stall everyone), and returns the rest of its
        reply. While it is not finished, conn.job holds it."""
        try:
            part = next(job)
        except StopIteration as done:
            self._job_done(conn)
            result = done.value
            return (result if result.__class__ is bytes else encode(result, conn.resp3)), True
        except Exception as exc:
            self._job_done(conn)
            return self.failure(conn.last_command, exc), True
        conn.job = job
        return part or b"", False

    def _job_done(self, conn) -> None:
        conn.job = None
        if conn.job_timing is not None:
            cmd, argv, start = conn.job_timing
            conn.job_timing = None
            self._timed(conn, cmd, argv, perf_counter() - start)

    def _timed(self, conn, cmd, argv, elapsed: float) -> None:
        """Count a finished command in its stats, latency histogram and (if slow) the slow log."""
        cmd.calls += 1
        cmd.seconds_total += elapsed
        # Most commands finish inside the first bucket (10 us): skip the search for them.
        cmd.latency_buckets[0 if elapsed <= FIRST_BUCKET else bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        if elapsed > self.slowlog_threshold_s:
            self._slow(conn, cmd, argv, elapsed)

    def failure(self, name: str, exc: Exception) -> bytes:
        """The error reply for a command that raised; a bug costs one reply, not the connection."""
        if isinstance(exc, ReplyError):
            self.count_error(exc.kind)
            return error_line(exc.message)
        logs.error("command_failed", command=name, error=repr(exc))
        self.count_error("internal")
        return error_line(errors.internal(name, exc))

    def _unknown(self, argv: list[bytes]) -> bytes:
        self.unknown_calls += 1
        self.count_error("unknown_command")
        return error_line(errors.unknown_command(argv[0], argv[1:]))

    @property
    def slowlog_slower_than_us(self) -> int:
        return self._slowlog_slower_than_us

    @slowlog_slower_than_us.setter
    def slowlog_slower_than_us(self, micros: int) -> None:
        self._slowlog_slower_than_us = micros
        self.slowlog_threshold_s = float("inf") if micros < 0 else micros / 1e6

    @property
    def total_commands(self) -> int:
        return sum(cmd.calls for cmd in self.commands.values()) + self.unknown_calls

    def _slow(self, conn, cmd, argv, elapsed: float) -> None:
        micros = int(elapsed * 1e6)
        if argv[0].lower() in REDACTED or (cmd.name == "config" and len(argv) > 2 and argv[1].lower() == b"set"):
            shown = [argv[0]] + [b"(redacted)"] * (len(argv) - 1)
        else:
            shown = []
            for i, raw in enumerate(argv):
                if i == 31 and len(argv) > 32:
                    shown.append(b"... (%d more arguments)" % (len(argv) - 31))
                    break
                shown.append(raw if len(raw) <= 128 else raw[:128] + b"... (%d more bytes)" % (len(raw) - 128))
        self.slowlog_next_id += 1
        if self.slowlog.maxlen:
            self.slowlog.appendleft(
                (self.slowlog_next_id - 1, int(time.time()), micros, shown, conn.addr, conn.name)
            )
        logs.info("slow_command", command=cmd.name, duration_us=micros, args=len(argv) - 1, client=conn.addr)

    # -- persistence hooks ---------------------------------------------------------------------

    def _log_write(self, cmd: Command, argv: list[bytes]) -> None:
        aof = self.aof
        if cmd.name in ("flushall", "flushdb"):
            aof.feed(FLUSHALL)
            return
        data, expires = self.db.data, self.db.expires
        for key in cmd.keys(argv):
            value = data.get(key)
            if value is None:
                aof.feed(encode_del(key))
            else:
                aof.feed(*encode_set(key, value, expires.get(key)))

    def _log_delete(self, key: bytes) -> None:
        if self.aof is not None and not self.shutting_down:
            self.aof.feed(encode_del(key))

    def replayer(self):
        """apply(argv) -> reply, for replaying an append-only file into this server's keyspace."""
        loader = LoaderConnection(self)
        return lambda argv: self.call(loader, argv)

    def load_aof(self) -> None:
        aof = AppendOnlyFile(self.config.dir, self.config.appendfsync)
        started = time.monotonic()
        records = aof.load(self.replayer())
        self.reset_stats()
        logs.info("aof_loaded", path=aof.path, records=records, keys=len(self.db),
                  seconds=round(time.monotonic() - started, 3))
        aof.open()
        self.aof = aof
        self.dirty = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopped = self.loop.create_future()
        if self.config.appendonly:
            self.load_aof()
        config = self.config
        if config.port:
            self.listener = await self.loop.create_server(
                lambda: Connection(self), config.bind, config.port, backlog=511, reuse_address=True
            )
        if self.tls is not None:
            self.tls_listener = await listen_tls(self, config.bind, config.tls_port)
        registry = make_registry(self)
        self.metrics_listener = await serve_metrics(registry, config.metrics_bind, config.metrics_port, ssl=self.tls,
                                                    users=self.metrics_users, profiling_hz=config.profiling_hz)
        self.metrics_port = self.metrics_listener.sockets[0].getsockname()[1]
        for signum, handler in ((signal.SIGTERM, self.request_shutdown), (signal.SIGINT, self.request_shutdown),
                                (signal.SIGHUP, self._reopen_logs)):
            self.loop.add_signal_handler(signum, handler, signum)
        self._cron_expected = self.loop.time() + 1 / HZ
        self.loop.call_later(1 / HZ, self._cron)
        logs.info("started", bind=self.config.bind, port=self.port, tls_port=self.tls_port,
                  tls_auth_clients=config.tls_auth_clients if self.tls else None, metrics_bind=self.config.metrics_bind,
                  metrics_port=self.metrics_port, pid=os.getpid(), version=__version__,
                  appendonly=self.config.appendonly, maxmemory=self.maxmemory,
                  maxmemory_policy=self.db.policy, loop=type(self.loop).__module__.split(".")[0])

    def _reopen_logs(self, _signum=None) -> None:
        logs.reopen()
        logs.info("log_reopened")

    def request_shutdown(self, reason="signal") -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        if isinstance(reason, int):
            reason = signal.Signals(reason).name
        logs.info("shutdown_requested", reason=reason)
        self.loop.call_soon(self._finish_shutdown)

    def _finish_shutdown(self) -> None:
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                listener.close()
        if self.metrics_listener is not None:
            self.metrics_listener.close()
        if self.aof is not None:
            self.aof.abort_rewrite()
            self.aof.close()
        for conn in list(self.clients.values()):
            if conn.transport is not None:
                conn.transport.close()
        logs.info("stopped", keys=len(self.db))
        if not self.stopped.done():
            self.stopped.set_result(None)

    def _cron(self) -> None:
        if self.shutting_down:
            return
        loop = self.loop
        now = loop.time()
        self.event_loop_lag = max(0.0, now - self._cron_expected)
        self._cron_expected = now + 1 / HZ
        loop.call_later(1 / HZ, self._cron)
        self._ops_samples.append((now, self.total_commands))
        if now >= self._next_timeout_check:
            self._next_timeout_check = now + TIMEOUT_CHECK_S
            self._close_timed_out()
        if not self._expire_pending:
            self._expire_tick()
        if self.db.garbage and not self._free_pending:
            self._free_tick()
        self.db.compact()
        used = self.db.used_memory
        if used > self._used_at_trim:
            self._used_at_trim = used
        elif self._used_at_trim - used > TRIM_AFTER_FREED_BYTES and malloc_trim is not None:
            malloc_trim(0)
            self._used_at_trim = used
        aof = self.aof
        if aof is not None:
            aof.poll_rewrite()
            if now - self._last_fsync >= 1.0:
                self._last_fsync = now
                aof.flush()
                aof.fsync_soon(loop)
            if aof.needs_rewrite():
                aof.start_rewrite(self.db)

    def _close_timed_out(self) -> None:
        """Close clients idle for longer than `timeout` (Redis's clientsCronHandleTimeout: no
        reply, just closed) and, while a password is required, those that have not authenticated
        within `auth_timeout`. A client whose command is still at work is not idle."""
        idle_limit = self.timeout
        auth_limit = self.auth_timeout if self.requirepass else 0
        if not idle_limit and not auth_limit:
            return
        now = time.monotonic()
        idle = unauthenticated = 0
        for conn in list(self.clients.values()):
            if conn.job is not None or conn.closed:
                continue
            if auth_limit and not conn.authenticated and now - conn.created > auth_limit:
                unauthenticated += 1
            elif idle_limit and now - conn.last_active > idle_limit:
                idle += 1
            else:
                continue
            conn.kill()
        if idle or unauthenticated:
            # One line per sweep, not per client: a flood of idle connections does not flood the log.
            logs.info("clients_timed_out", idle=idle, unauthenticated=unauthenticated,
                      timeout=idle_limit, auth_timeout=auth_limit)

    def _expire_tick(self) -> None:
        self._expire_pending = False
        if self.shutting_down:
            return
        if self.db.active_expire(EXPIRE_SLICE_S):
            # More is due: go on right after the clients waiting now have been served.
            self._expire_pending = True
            self.loop.call_soon(self._expire_tick)
        if self.aof is not None:
            self.aof.flush()

    def _free_tick(self) -> None:
        self._free_pending = self.db.free_garbage(FREE_SLICE_S)
        if self._free_pending:
            self.loop.call_soon(self._free_tick)
        elif malloc_trim is not None:
            malloc_trim(0)

    def check_password(self, username: bytes, password: bytes) -> bool:
        import hmac

        expected = self.requirepass
        if username != b"default":
            return False
        if not expected:
            return True
        return hmac.compare_digest(password, expected)

    # -- INFO and CONFIG -----------------------------------------------------------------------

    def ops_per_sec(self) -> int:
        if len(self._ops_samples) < 2:
            return 0
        (t0, c0), (t1, c1) = self._ops_samples[0], self._ops_samples[-1]
        return int((c1 - c0) / (t1 - t0)) if t1 > t0 else 0
