"""One client connection: reads parsed into commands, replies written in request order.

Every read is parsed into as many commands as it holds; they run one after the other (Server.execute)
and their replies are joined into one write, so a pipelined client costs one syscall per read. A
client whose replies pile up (it does not read) stops being read from until its output drains;
past the output limit it is dropped. A command that works in slices (Server.advance) holds back
the commands after it until it is done.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import errors, logs
from .protocol import RequestParser, error_line

if TYPE_CHECKING:
    from .server import Server

# Stop reading a client whose unsent replies exceed this (asyncio's write buffer high-water mark).
WRITE_HIGH_WATER = 1024 * 1024


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "db", "id", "transport", "parser", "resp3", "_authenticated", "name", "addr", "laddr", "host",
        "created", "last_active", "last_command", "close_after_reply", "closed", "paused",
        "backlog", "job", "job_timing", "fd", "handshake",
    )

    def __init__(self, server: "Server", handshake=None):
        self.server = server
        # A TLS connection's tls.Handshake: its slot was taken when it was accepted.
        self.handshake = handshake
        self.db = server.db
        self.transport = None
        self.parser = RequestParser(server.proto_max_bulk_len, server.client_query_buffer_limit)
        self.resp3 = False
        self._authenticated = not server.requirepass
        self.name = b""
        self.id = 0
        self.addr = self.laddr = self.host = "?"
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
        self.job_timing = None  # (command, argv, start) of the job, timed when it finishes

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.laddr = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else str(local)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.host = peer[0] if isinstance(peer, tuple) else self.addr
        if server.shutting_down:
            self.refuse()
            return
        if self.handshake is not None:
            self.handshake.release()  # this connection takes over the slot its handshake held
        elif not server.make_room():
            self.refuse()
            return
        server.next_client_id += 1
        self.id = server.next_client_id
        server.clients[self.id] = self
        if not self._authenticated:
            server.unauthenticated.add(self.host, self)
        server.total_connections += 1
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        logs.debug("client_connected", client=self.addr, id=self.id)

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        if value != self._authenticated and self.id in self.server.clients:
            if value:
                self.server.unauthenticated.discard(self.host, self)
            else:
                self.server.unauthenticated.add(self.host, self)
        self._authenticated = value

    def refuse(self) -> None:
        """Redis's reply past maxclients, then close: for a newcomer refused, or a client pushed out."""
        server = self.server
        server.rejected_connections += 1
        server.count_error("maxclients")
        logs.warning("connection_rejected", client=self.addr, reason="maxclients", maxclients=server.maxclients)
        self.transport.write(error_line(errors.MAX_CLIENTS))
        self.transport.close()
        self.closed = True
        if server.clients.pop(self.id, None) is not None:
            server.unauthenticated.discard(self.host, self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.backlog = None
        self.server.unauthenticated.discard(self.host, self)
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
        self.last_active = time.monotonic()
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
