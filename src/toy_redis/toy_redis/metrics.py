"""Prometheus metrics, served over HTTP on their own port (GET /metrics).

The server counts in plain integers as it runs (a lock-taking prometheus-client Counter per
command would cost more than many commands do); this collector turns them into metric families
when Prometheus scrapes. The HTTP endpoint runs on the server's event loop, not in a thread, so
that a scrape reads the counters between commands and the AOF rewrite can fork safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from http import HTTPStatus

from pprof_sampler import PATH as PROFILE_PATH
from pprof_sampler import ProfileEndpoint, Sampler
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from service_kit.crowd import Unproven
from service_kit.listen import tcp_listener
from service_kit.logins import Logins

from toy_redis.config import METRICS_MAX_CONNECTIONS

# 10 us .. 1 s, dense enough around typical latencies to read p50/p90/p95/p99.
LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)


class ServerCollector:
    def __init__(self, server):
        self.server = server

    def collect(self):
        server = self.server
        db = server.db
        commands = CounterMetricFamily("toy_redis_commands", "Commands processed, by command name.", labels=["command"])
        latency = HistogramMetricFamily(
            "toy_redis_command_duration_seconds", "Time spent executing a command, by command name.", labels=["command"]
        )
        for cmd in server.command_stats():
            if not cmd.calls:
                continue
            commands.add_metric([cmd.name], cmd.calls)
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS, cmd.latency_buckets):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cmd.calls))
            latency.add_metric([cmd.name], buckets, cmd.seconds_total)
        yield commands
        yield latency
        errors = CounterMetricFamily("toy_redis_errors", "Error replies and protocol errors, by kind.", labels=["kind"])
        for kind, count in sorted(server.error_counts.items()):
            errors.add_metric([kind], count)
        yield errors
        yield GaugeMetricFamily("toy_redis_keys", "Keys in the database.", value=len(db.data))
        yield GaugeMetricFamily("toy_redis_keys_with_ttl", "Keys that have a TTL.", value=len(db.expires))
        yield CounterMetricFamily("toy_redis_expired_keys", "Keys deleted because their TTL passed.", value=db.expired_keys)
        yield GaugeMetricFamily(
            "toy_redis_expired_stale_ratio",
            "Share of keys with a TTL that have expired but are not reclaimed yet.",
            value=db.expired_stale_ratio(),
        )
        yield CounterMetricFamily("toy_redis_evicted_keys", "Keys evicted to stay under maxmemory.", value=db.evicted_keys)
        yield CounterMetricFamily(
            "toy_redis_rejected_connections", "Connections refused because maxclients was reached.",
            value=server.rejected_connections,
        )
        yield GaugeMetricFamily("toy_redis_connected_clients", "Open client connections.", value=len(server.clients))
        yield CounterMetricFamily("toy_redis_connections", "Client connections accepted.", value=server.total_connections)
        yield CounterMetricFamily("toy_redis_net_input_bytes", "Bytes read from clients.", value=server.net_input_bytes)
        yield CounterMetricFamily("toy_redis_net_output_bytes", "Bytes written to clients.", value=server.net_output_bytes)
        yield GaugeMetricFamily(
            "toy_redis_event_loop_lag_seconds",
            "How late the last event-loop tick ran: time requests wait behind other work.",
            value=server.event_loop_lag,
        )
        yield GaugeMetricFamily(
            "toy_redis_used_memory_bytes", "Memory used by the dataset as accounted for maxmemory.", value=db.used_memory
        )


def make_registry(server) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    ProcessCollector(registry=registry)
    return registry


# The listen backlog (asyncio's default, named because the hostile-input test floods past it).
METRICS_LISTEN_BACKLOG = 100
# Time a connection has to send its request headers (at most REQUEST_LIMIT bytes), and then to
# take the reply.
REQUEST_TIMEOUT_S = 10
REQUEST_LIMIT = 16384
# A connection whose request carried a login stays open for its next request this long (HTTP/1.1
# keep-alive), so a scraper pays the TCP and TLS handshakes once, not at every scrape: longer than
# Prometheus's default scrape interval (1m), shorter than its client's idle timeout (5m). While it
# waits, it is the first to go when a new connection finds every slot taken (see Slots).
KEEPALIVE_IDLE_S = 90


UNAUTHORIZED = (b"401 Unauthorized", b"log in to read the metrics\n", b"text/plain")


class Slots:
    """Who holds the endpoint's METRICS_MAX_CONNECTIONS connections.

    A connection is unproven until its request carried a login that matched (or, without logins,
    until its request is read); then it is trusted and only its own timeouts end it, except while
    it waits idle for its next request (keep-alive). When a new connection finds every slot taken,
    an unproven one is pushed out as service_kit.crowd.Unproven chooses, its task cancelled (so a bcrypt check
    it queued is dropped); failing that, the trusted one idle the longest (its client reconnects
    when it scrapes next); if every slot is busy and trusted, the new one is closed. So peers
    without a login can push out only one another and idle connections, and a scraper's request
    is never cut off by a flood from other addresses, however fast it connects."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.unproven = Unproven()
        self.trusted: set[asyncio.Task] = set()
        # Trusted connections waiting for their next request, longest waiting first.
        self.idle: dict[asyncio.Task, None] = {}

    def admit(self, address: str, task: asyncio.Task) -> bool:
        if self.unproven.count + len(self.trusted) >= self.capacity:
            pushed_out = self.unproven.push_out()
            if pushed_out is not None:
                pushed_out[1].cancel()
            elif self.idle:
                idle = next(iter(self.idle))
                self.release_task(idle)
                idle.cancel()
            else:
                return False
        self.unproven.add(address, task)
        return True

    def trust(self, address: str, task: asyncio.Task) -> None:
        if self.unproven.discard(address, task):
            self.trusted.add(task)

    def waiting(self, task: asyncio.Task, idle: bool) -> None:
        """A trusted connection starts (idle) or ends waiting for its next request."""
        if not idle:
            self.idle.pop(task, None)
        elif task in self.trusted:
            self.idle[task] = None

    def release_task(self, task: asyncio.Task) -> None:
        self.trusted.discard(task)
        self.idle.pop(task, None)

    def release(self, address: str, task: asyncio.Task) -> None:
        self.unproven.discard(address, task)
        self.release_task(task)


def _authorization(request: bytes) -> bytes | None:
    """The value of the request's `Authorization` header, or None."""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return value
    return None


# After a failed accept (out of descriptors), wait this long before accepting again (as asyncio does).
ACCEPT_RETRY_S = 1.0


class MetricsListener:
    """The endpoint: its listening socket (`sockets`, as asyncio.Server has), its accept loop, and
    how each connection is served.

    A connection takes a slot as soon as it is accepted, before its TLS handshake, so handshakes
    count against METRICS_MAX_CONNECTIONS like everything else a peer can hold (asyncio's own
    server would hold any number of them, each for its handshake timeout)."""

    def __init__(self, registry: CollectorRegistry, sock: socket.socket, ssl, users: dict[str, bytes] | None,
                 profiles: ProfileEndpoint | None = None):
        self.registry, self.ssl, self.profiles = registry, ssl, profiles
        self.sockets = [sock]
        self.slots = Slots(METRICS_MAX_CONNECTIONS)
        self.logins = Logins(users) if users else None
        self.loop = asyncio.get_running_loop()
        self.accepting = self.loop.create_task(self.accept())

    def close(self) -> None:
        self.accepting.cancel()
        self.sockets[0].close()
        if self.profiles is not None:
            self.profiles.sampler.stop()
            self.profiles.close()

    async def accept(self) -> None:
        while True:
            try:
                sock, _ = await self.loop.sock_accept(self.sockets[0])
            except OSError:
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            self.loop.create_task(self.serve(sock))

    async def serve(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        try:
            address = sock.getpeername()[0]
        except OSError:
            sock.close()
            return
        if not self.slots.admit(address, task):
            sock.close()
            return
        writer = None
        try:
            reader = asyncio.StreamReader(limit=REQUEST_LIMIT)
            # Ours, not what connect_accepted_socket returns: with uvloop and TLS that is its
            # SSLProtocol, which a StreamWriter cannot wait on (drain).
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await self.loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self.ssl.current() if self.ssl else None,
                ssl_handshake_timeout=REQUEST_TIMEOUT_S if self.ssl else None)
            writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
            await self.answer(reader, writer, address, task)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError,
                ssl_module.SSLError):
            pass
        except asyncio.CancelledError:
            # Pushed out by Slots (or the server stops): expected, nothing to report.
            pass
        finally:
            self.slots.release(address, task)
            if writer is not None:
                # Frees the descriptor now, also when the client never took the reply or was
                # pushed out (after the reply went out, it does nothing).
                writer.transport.abort()
            else:
                # Cut short in its handshake: the transport being built owns the descriptor and
                # closes it once the connection is down, which this makes it at once.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, task) -> None:
        """The connection's requests, one after another (keep-alive) until one is refused, asks to
        close, or none comes within KEEPALIVE_IDLE_S: GET /metrics (or HEAD), or the CPU profile when
        profiling is on, each with one of the logins when there are any."""
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S)
        while True:
            keep_open = await self.answer_one(request, writer, address, task)
            if not keep_open:
                writer.close()
                # Until the client has taken the reply (a client that never reads is cut off).
                await asyncio.wait_for(writer.wait_closed(), timeout=REQUEST_TIMEOUT_S)
                return
            await asyncio.wait_for(writer.drain(), timeout=REQUEST_TIMEOUT_S)
            self.slots.waiting(task, idle=True)
            try:
                # The next request's first byte may take up to KEEPALIVE_IDLE_S; then its headers
                # have REQUEST_TIMEOUT_S, as a new connection's have.
                first = await asyncio.wait_for(reader.readexactly(1), timeout=KEEPALIVE_IDLE_S)
            except asyncio.IncompleteReadError:
                return  # the client closed it: the usual end
            finally:
                self.slots.waiting(task, idle=False)
            request = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S)

    async def answer_one(self, request: bytes, writer: asyncio.StreamWriter, address: str, task) -> bool:
        """Answer one request; whether the connection stays open for another."""
        method, _, rest = request.partition(b" ")
        target, _, version = rest.partition(b" ")
        path, _, query = target.partition(b"?")
        authorized = self.logins is None or await self.logins.allow(_authorization(request), address)
        if authorized:
            self.slots.trust(address, task)
        if not authorized:
            status, body, ctype = UNAUTHORIZED
        elif method not in (b"GET", b"HEAD"):
            status, body, ctype = b"405 Method Not Allowed", b"only GET\n", b"text/plain"
        elif path in (b"/metrics", b"/"):
            status, body, ctype = b"200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()
        elif path == PROFILE_PATH.encode() and self.profiles is not None:
            code, body, content_type = await self.profiles.answer(query.decode("latin-1"))
            status, ctype = b"%d %s" % (code, HTTPStatus(code).phrase.encode()), content_type.encode()
        else:
            status, body, ctype = b"404 Not Found", b"metrics are at /metrics\n", b"text/plain"
        # Kept open only after an answered GET or HEAD of an HTTP/1.1 client that did not ask to
        # close and sent no body (this endpoint reads none: its bytes would be taken for a request).
        keep_open = (status[:3] in (b"200", b"404") and version.split(b"\r\n", 1)[0] == b"HTTP/1.1"
                     and not _must_close(request))
        challenge = b"\r\nWWW-Authenticate: Basic realm=\"toy-redis\"" if status == UNAUTHORIZED[0] else b""
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + challenge
            + b"\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (len(body), b"keep-alive" if keep_open else b"close")
            + (body if method != b"HEAD" else b"")
        )
        return keep_open


def _must_close(request: bytes) -> bool:
    """Whether the request asks to close (Connection: close) or announces a body."""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if (name == b"connection" and b"close" in value.lower()) or name in (b"content-length", b"transfer-encoding"):
            return True
    return False


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, ssl=None,
                        users: dict[str, bytes] | None = None, profiling_hz: int = 0) -> MetricsListener:
    """Minimal HTTP/1.1 endpoint: GET /metrics, keep-alive for clients with the login, over TLS when `ssl`
    (a tls.ReloadingContext) is given, asking for one of `users`' logins (name: bcrypt hash) when given.
    With `profiling_hz`, a Sampler runs at that rate and GET /debug/pprof/profile serves its profiles
    (config.read_metrics_users refuses profiling without logins)."""
    # First: a process whose SIGPROF is taken (SigprofTaken) is refused before anything is opened.
    profiles = ProfileEndpoint(Sampler(profiling_hz).start()) if profiling_hz else None
    sock = tcp_listener(host, port, METRICS_LISTEN_BACKLOG)
    return MetricsListener(registry, sock, ssl, users, profiles)
