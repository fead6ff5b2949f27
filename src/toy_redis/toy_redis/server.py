"""The asyncio server: one thread, one event loop, no locks.

Each connection is an asyncio.Protocol. Every read is parsed into as many commands as it holds;
they run one after the other and their replies are joined into one write, so replies leave in
request order and a pipelined client costs one syscall per read. A client whose replies pile up
(it does not read) stops being read from until its output drains; past the output limit it is
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from bisect import bisect_left
from collections import deque
from time import perf_counter
from types import GeneratorType

from . import __version__, logs
from .aof import FLUSHALL, AppendOnlyFile, encode_del, encode_set
from .commands import COMMANDS, Command
from .config import POLICIES, Config
from .glob import matcher
from .keyspace import Keyspace
from .metrics import LATENCY_BUCKETS, make_registry, serve_metrics
from .protocol import ReplyError, RequestParser, encode, error_line

REDIS_VERSION = "7.0.15"
FIRST_BUCKET = LATENCY_BUCKETS[0]
HZ = 10
# Time the active expiry cycle, or freeing what a flush dropped, may hold the loop before
# letting clients in again.
EXPIRE_SLICE_S = 0.010
FREE_SLICE_S = 0.005
WRITE_HIGH_WATER = 1024 * 1024
# Commands whose arguments are secrets: never in the slow log or the logs.
REDACTED = {b"auth", b"hello", b"migrate"}


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


def parse_memory(raw: str) -> int | None:
    """Redis's memtoull: 100, 1k, 1kb, 1m, 1mb, 1g, 1gb (k=1000, kb=1024)."""
    text = raw.strip().lower()
    units = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    digits = text.rstrip("kmgb")
    unit = text[len(digits):]
    if not digits.isdigit() or unit not in units:
        return None
    return int(digits) * units[unit]


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "db", "id", "transport", "parser", "resp3", "authenticated", "name", "addr", "laddr",
        "created", "last_active", "last_command", "close_after_reply", "closed", "paused",
        "backlog", "job", "fd",
    )

    def __init__(self, server: "Server"):
        self.server = server
        self.db = server.db
        self.transport = None
        self.parser = RequestParser(server.proto_max_bulk_len, server.client_query_buffer_limit)
        self.resp3 = False
        self.authenticated = not server.config.requirepass
        self.name = b""
        self.id = 0
        self.addr = self.laddr = "?"
        self.fd = -1
        self.created = self.last_active = time.monotonic()
        self.last_command = "NULL"
        self.close_after_reply = False
        self.closed = False
        self.paused = False
        # Parsed commands not run yet because the client has not read the replies before them,
        # or because a command before them is still at work (see Server.advance).
        self.backlog = None
        # A command working in slices (a generator, see Server.advance).
        self.job = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.laddr = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else str(local)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        if len(server.clients) >= server.maxclients or server.shutting_down:
            server.rejected_connections += 1
            server.count_error("maxclients")
            logs.warning("connection_rejected", client=self.addr, reason="maxclients", maxclients=server.maxclients)
            transport.write(b"-ERR max number of clients reached\r\n")
            transport.close()
            self.closed = True
            return
        server.next_client_id += 1
        self.id = server.next_client_id
        server.clients[self.id] = self
        server.total_connections += 1
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        logs.debug("client_connected", client=self.addr, id=self.id)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.backlog = None
        if self.server.clients.pop(self.id, None) is not None:
            logs.debug("client_disconnected", client=self.addr, id=self.id)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it catches up.
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._resume()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.server.net_input_bytes += len(data)
        commands, error = self.parser.feed(data, self.authenticated)
        self._run(commands, error)

    def _run(self, commands: list[list[bytes]], error) -> None:
        server = self.server
        replies = server.execute(self, commands)
        if self.job is not None:
            # A command works in slices: what it follows is sent now, what follows it waits.
            self.backlog = (commands[len(replies) :], error)
            self._send(replies)
            self.transport.pause_reading()
            server.loop.call_soon(self._step_job)
            return
        if len(replies) < len(commands) and not self.close_after_reply:
            # One read can hold thousands of commands with big replies: send what is ready and
            # run the rest once the client has taken it, so output stays bounded.
            self.backlog = (commands[len(replies) :], error)
            error = None
        if error is not None and not self.close_after_reply:
            server.count_error("protocol")
            logs.info("protocol_error", client=self.addr, error=str(error))
            replies.append(error_line("ERR " + str(error)))
            self.close_after_reply = True
        self._send(replies)
        if self.backlog is not None and not self.closed:
            self.transport.pause_reading()
            if not self.paused:
                server.loop.call_soon(self._run_backlog)

    def _send(self, replies: list[bytes]) -> None:
        """Write replies; close the connection if asked to or if its output is over the limit."""
        server = self.server
        reply = replies[0] if len(replies) == 1 else b"".join(replies)
        if server.aof is not None:
            server.aof.flush()
        self.last_active = time.monotonic()
        if reply:
            server.net_output_bytes += len(reply)
            self.transport.write(reply)
        if self.close_after_reply:
            self.closed = True
            self.backlog = None
            self.transport.close()
        elif self.transport.get_write_buffer_size() > server.client_output_buffer_limit:
            server.count_error("output_buffer")
            logs.warning("client_dropped", client=self.addr, reason="output buffer limit",
                         limit=server.client_output_buffer_limit)
            self.closed = True
            self.backlog = None
            self.transport.abort()

    def _step_job(self) -> None:
        """The working command's next slice, run once the loop has served other clients (and,
        if it sends its reply in parts, once the client has read the parts before)."""
        if self.job is None or self.paused:
            return  # resume_writing() goes on
        if self.closed:
            self.job.close()
            self.job = None
            return
        output, finished = self.server.advance(self, self.job)
        self._send([output])
        if finished:
            self._resume()
        else:
            self.server.loop.call_soon(self._step_job)

    def _resume(self) -> None:
        """Go on with what the client sent after a command that had to wait."""
        if self.closed or self.paused:
            return
        if self.job is not None:
            self.server.loop.call_soon(self._step_job)
            return
        if self.backlog is not None:
            self._run_backlog()
        else:
            self.transport.resume_reading()

    def _run_backlog(self) -> None:
        if self.closed or self.paused or self.backlog is None or self.job is not None:
            return
        commands, error = self.backlog
        self.backlog = None
        self._run(commands, error)
        if self.backlog is None and self.job is None and not self.paused and not self.closed:
            self.transport.resume_reading()

    def kill(self) -> None:
        """CLIENT KILL: close after what was already written."""
        self.closed = True
        self.backlog = None
        self.transport.close()

    def describe(self) -> str:
        now = time.monotonic()
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd={self.fd} name={self.name.decode(errors='replace')} "
            f"age={int(now - self.created)} idle={int(now - self.last_active)} flags=N db=0 sub=0 psub=0 "
            f"ssub=0 multi=-1 qbuf={self.parser.pending()} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 "
            f"obl=0 oll=0 omem={self.transport.get_write_buffer_size() if self.transport else 0} tot-mem=0 "
            f"events=r cmd={self.last_command} user=default redir=-1 resp={3 if self.resp3 else 2}"
        )


class LoaderConnection:
    """The client the AOF is replayed through."""

    def __init__(self, server):
        self.server = server
        self.db = server.db
        self.resp3 = False
        self.authenticated = True
        self.close_after_reply = False
        self.name = b""
        self.id = 0
        self.addr = "aof"
        self.last_command = "NULL"
        self.job = None


class Server:
    def __init__(self, config: Config, config_file: str | None = None):
        self.config = config
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
        self.next_client_id = 0
        self.maxclients = config.maxclients
        self.maxmemory = config.maxmemory
        self.slowlog_slower_than_us = config.slowlog_log_slower_than_us
        self.slowlog: deque = deque(maxlen=config.slowlog_max_len)
        self.slowlog_next_id = 0
        self.proto_max_bulk_len = 512 * 1024 * 1024
        self.client_query_buffer_limit = 1024**3
        self.client_output_buffer_limit = 256 * 1024 * 1024
        self.aof: AppendOnlyFile | None = None
        self.dirty = 0
        self.shutting_down = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listener = None
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
        """Run commands in order and return their replies, stopping early after a command that
        closes the connection or once WRITE_HIGH_WATER bytes of replies are ready (the caller
        keeps the rest). The per-command path is written out in this one loop because it runs
        for every command of every pipeline."""
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
                reply = error_line(f"ERR wrong number of arguments for '{cmd.name}' command")
            elif not conn.authenticated and not cmd.no_auth:
                self.count_error("noauth")
                reply = b"-NOAUTH Authentication required.\r\n"
            elif (self.maxmemory and cmd.denyoom and self.db.used_memory > self.maxmemory
                  and not self.db.evict(self.maxmemory)):
                self.count_error("oom")
                reply = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
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
                elapsed = perf_counter() - start
                cmd.calls += 1
                cmd.seconds_total += elapsed
                # Most commands finish inside the first bucket (10 us): skip the search for them.
                cmd.latency_buckets[0 if elapsed <= FIRST_BUCKET else bisect_left(LATENCY_BUCKETS, elapsed)] += 1
                if elapsed > self.slowlog_threshold_s:
                    self._slow(conn, cmd, argv, elapsed)
                if reply.__class__ is not bytes:
                    if reply.__class__ is GeneratorType:
                        reply, finished = self.advance(conn, reply)
                        if not finished:
                            append(reply)
                            break  # it goes on in slices (conn.job); the rest of its reply comes later
                    else:
                        reply = encode(reply, conn.resp3)
            append(reply)
            if conn.close_after_reply:
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
            conn.job = None
            result = done.value
            return (result if result.__class__ is bytes else encode(result, conn.resp3)), True
        except Exception as exc:
            conn.job = None
            return self.failure(conn.last_command, exc), True
        conn.job = job
        return part or b"", False

    def failure(self, name: str, exc: Exception) -> bytes:
        """The error reply for a command that raised; a bug costs one reply, not the connection."""
        if isinstance(exc, ReplyError):
            self.count_error(exc.kind)
            return error_line(exc.message)
        logs.error("command_failed", command=name, error=repr(exc))
        self.count_error("internal")
        return error_line(f"ERR internal error in '{name}': {type(exc).__name__}")

    def _unknown(self, argv: list[bytes]) -> bytes:
        self.unknown_calls += 1
        self.count_error("unknown_command")
        args = ""
        for raw in argv[1:]:
            if len(args) >= 128:
                break
            args += "'" + raw.decode(errors="replace")[: 128 - len(args)] + "' "
        name = argv[0].decode(errors="replace")[:128]
        return error_line(f"ERR unknown command '{name}', with args beginning with: {args}")

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
        self.listener = await self.loop.create_server(
            lambda: Connection(self), self.config.bind, self.config.port, backlog=511, reuse_address=True
        )
        self.port = self.listener.sockets[0].getsockname()[1]
        registry = make_registry(self)
        self.metrics_listener = await serve_metrics(registry, self.config.metrics_bind, self.config.metrics_port)
        self.metrics_port = self.metrics_listener.sockets[0].getsockname()[1]
        for signum, handler in ((signal.SIGTERM, self.request_shutdown), (signal.SIGINT, self.request_shutdown),
                                (signal.SIGHUP, self._reopen_logs)):
            self.loop.add_signal_handler(signum, handler, signum)
        self._cron_expected = self.loop.time() + 1 / HZ
        self.loop.call_later(1 / HZ, self._cron)
        logs.info("started", bind=self.config.bind, port=self.port, metrics_bind=self.config.metrics_bind,
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
        if self.listener is not None:
            self.listener.close()
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

        expected = self.config.requirepass
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

    def config_values(self) -> dict[str, str]:
        aof = self.aof
        return {
            "bind": self.config.bind,
            "port": str(self.port),
            "maxclients": str(self.maxclients),
            "maxmemory": str(self.maxmemory),
            "maxmemory-policy": self.db.policy,
            "appendonly": "yes" if aof is not None else "no",
            "appendfsync": aof.fsync_mode if aof is not None else self.config.appendfsync,
            "appendfilename": "appendonly.aof",
            "dir": os.path.abspath(self.config.dir),
            "save": "",
            "databases": "1",
            "timeout": "0",
            "loglevel": logging.getLevelName(logs.LOGGER.level).lower().replace("warning", "warning"),
            "logfile": self.config.log_file or "",
            "slowlog-log-slower-than": str(self.slowlog_slower_than_us),
            "slowlog-max-len": str(self.slowlog.maxlen),
            "proto-max-bulk-len": str(self.proto_max_bulk_len),
            "client-query-buffer-limit": str(self.client_query_buffer_limit),
            "client-output-buffer-limit": f"normal {self.client_output_buffer_limit} 0 0 replica 0 0 0 pubsub 0 0 0",
            "hz": str(HZ),
            "auto-aof-rewrite-min-size": str(aof.min_rewrite_size if aof else 64 * 1024 * 1024),
            "auto-aof-rewrite-percentage": "100",
            "requirepass": "",
        }

    def config_get(self, patterns: list[bytes]):
        """A generator (see advance): a long pattern is read in slices."""
        values = self.config_values()
        values.pop("requirepass")  # a secret: never sent back
        result = {}
        for pattern in patterns:
            match = yield from matcher(pattern.lower())
            for name, value in values.items():
                if match is None or match(name.encode()):
                    result[name] = value
        return result

    def config_set(self, pairs: list[bytes]) -> None:
        updates = {}
        for i in range(0, len(pairs), 2):
            name = pairs[i].decode(errors="replace").lower()
            raw = pairs[i + 1].decode(errors="replace")
            updates[name] = (raw, self._config_setter(name, raw))
        for name, (_raw, apply) in updates.items():
            apply()
            logs.info("config_set", name=name)

    def _config_setter(self, name: str, raw: str):
        def failed(reason: str) -> ReplyError:
            return ReplyError(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")

        def integer(low: int, high: int) -> int:
            try:
                value = int(raw)
            except ValueError:
                raise failed("argument couldn't be parsed into an integer") from None
            if not low <= value <= high:
                raise failed(f"argument must be between {low} and {high} inclusive")
            return value

        def memory() -> int:
            value = parse_memory(raw)
            if value is None:
                raise failed("argument must be a memory value")
            return value

        if name == "maxmemory":
            value = memory()
            return lambda: setattr(self, "maxmemory", value)
        if name == "maxmemory-policy":
            if raw.lower() not in POLICIES:
                raise failed("argument(s) must be one of the following: " + ", ".join(POLICIES))
            return lambda: self.db.set_policy(raw.lower())
        if name == "maxclients":
            value = integer(1, 1_000_000)
            return lambda: setattr(self, "maxclients", value)
        if name == "slowlog-log-slower-than":
            value = integer(-1, 2**63 - 1)
            return lambda: setattr(self, "slowlog_slower_than_us", value)
        if name == "slowlog-max-len":
            value = integer(0, 2**31 - 1)
            return lambda: setattr(self, "slowlog", deque(self.slowlog, maxlen=value))
        if name == "proto-max-bulk-len":
            value = memory()
            if value < 1024 * 1024:
                raise failed("argument must be a memory value of at least 1mb")
            return lambda: setattr(self, "proto_max_bulk_len", value)
        if name == "client-query-buffer-limit":
            value = memory()
            if value < 1024 * 1024:
                raise failed("argument must be a memory value of at least 1mb")
            return lambda: setattr(self, "client_query_buffer_limit", value)
        if name == "client-output-buffer-limit":
            words = raw.split()
            if len(words) != 4 or words[0].lower() != "normal" or parse_memory(words[1]) is None:
                raise failed("argument must be 'normal <hard limit> 0 0'")
            value = parse_memory(words[1]) or 2**63
            return lambda: setattr(self, "client_output_buffer_limit", value)
        if name == "appendfsync":
            if raw.lower() not in ("always", "everysec", "no"):
                raise failed("argument(s) must be one of the following: always, everysec, no")
            return lambda: self.aof and setattr(self.aof, "fsync_mode", raw.lower())
        if name == "auto-aof-rewrite-min-size":
            value = memory()
            return lambda: self.aof and setattr(self.aof, "min_rewrite_size", value)
        if name == "loglevel":
            levels = {"debug": "DEBUG", "verbose": "INFO", "notice": "INFO", "info": "INFO", "warning": "WARNING"}
            if raw.lower() not in levels:
                raise failed("argument(s) must be one of the following: debug, verbose, notice, warning")
            return lambda: logs.LOGGER.setLevel(levels[raw.lower()])
        if name in ("save", "timeout"):
            return lambda: None
        if name in self.config_values():
            raise failed("can't set immutable config")
        raise ReplyError(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
