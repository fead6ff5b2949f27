"""TLS for the RESP and metrics listeners, under Redis's settings (tls-port, tls-cert-file,
tls-key-file, tls-ca-cert-file, tls-auth-clients; see redis.conf's TLS section).

A TLS client counts against `maxclients` from the moment it is accepted, as in Redis
(networking.c's acceptCommonHandler: a refused one is closed before any handshake, "nothing is
written and the connection will just drop"); until its handshake is done it has not authenticated,
so at the limit it may be pushed out like any other such client (Server.make_room), and the
handshake must be done within `auth_timeout`. So connections that never finish a handshake are
bounded in number and in time like clients that never log in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import TYPE_CHECKING

from service_kit.listen import tcp_listener
from service_kit.tls import ReloadingContext

from . import logs
from .config import Config, ConfigError

if TYPE_CHECKING:
    from .server import Server

# The RESP listeners' backlog.
LISTEN_BACKLOG = 511
# After a failed accept (out of descriptors), wait this long before accepting again (as asyncio does).
ACCEPT_RETRY_S = 1.0

# Redis's default tls-protocols is "TLSv1.2 TLSv1.3".
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
VERIFY_MODES = {"yes": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "no": ssl.CERT_NONE}


def server_context(config: Config, source: str) -> ssl.SSLContext | None:
    """The listeners' TLS context, or None when tls_port is 0. A file that cannot be used is a
    ConfigError naming its key."""
    if not config.tls_port:
        return None
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_cert_file"):
        path = getattr(config, key)
        if path is not None:
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(source, key, f"cannot read {path} ({exc.strerror})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        # Checked on its own first: load_cert_chain's errors do not say which file is at fault.
        ssl.create_default_context(cafile=config.tls_cert_file)
    except ssl.SSLError as exc:
        raise ConfigError(source, "tls_cert_file", f"expected a PEM certificate in {config.tls_cert_file} ({exc.reason})") from None
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(source, "tls_key_file",
                          f"expected the PEM private key of {config.tls_cert_file} in {config.tls_key_file} ({exc.reason})") from None
    if config.tls_ca_cert_file is not None:
        try:
            context.load_verify_locations(cafile=config.tls_ca_cert_file)
        except ssl.SSLError as exc:
            raise ConfigError(source, "tls_ca_cert_file",
                              f"expected PEM CA certificates in {config.tls_ca_cert_file} ({exc.reason})") from None
    context.verify_mode = VERIFY_MODES[config.tls_auth_clients]
    return context


def reloading_context(config: Config, source: str) -> ReloadingContext | None:
    """server_context (a ConfigError at start stops the start), made anew for new connections when
    tls_cert_file or tls_key_file changes (a certificate rotated by the deploy), or None when tls_port is 0."""
    if not config.tls_port:
        return None
    return ReloadingContext(config.tls_cert_file, config.tls_key_file, lambda: server_context(config, source),
                            ConfigError, logs.LOGGER)


class Handshake:
    """A TLS connection accepted on the RESP port, its handshake under way."""

    def __init__(self, server: "Server", sock: socket.socket, host: str):
        self.server, self.sock, self.host = server, sock, host
        self.task: asyncio.Task | None = None
        server.handshakes.add(self)
        server.unauthenticated.add(host, self)

    async def run(self) -> None:
        from .connection import Connection

        server = self.server
        try:
            await server.loop.connect_accepted_socket(lambda: Connection(server, self), self.sock, ssl=server.tls.current(),
                                                      ssl_handshake_timeout=server.auth_timeout)
        except (OSError, asyncio.TimeoutError):
            pass  # a failed or late handshake: the connection is dropped (ssl.SSLError is an OSError)
        except asyncio.CancelledError:
            # Pushed out: the transport being built owns the descriptor and closes it once the
            # connection is down, which this makes it at once.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        finally:
            self.release()

    def release(self) -> None:
        self.server.handshakes.discard(self)
        self.server.unauthenticated.discard(self.host, self)

    def refuse(self) -> None:
        """Pushed out to make room (Server.make_room): dropped, no reply (there is no session yet)."""
        server = self.server
        server.rejected_connections += 1
        server.count_error("maxclients")
        logs.warning("connection_rejected", client=self.host, reason="maxclients", maxclients=server.maxclients)
        self.release()
        if self.task is not None:
            self.task.cancel()


class TlsListener:
    """The RESP-over-TLS listening socket and its accept loop (what asyncio.Server would be)."""

    def __init__(self, sock: socket.socket, accepting: asyncio.Task):
        self.sockets = [sock]
        self.accepting = accepting

    def close(self) -> None:
        self.accepting.cancel()
        self.sockets[0].close()


async def listen_tls(server: "Server", host: str, port: int) -> TlsListener:
    """Accept TLS clients on host:port, each counted from its accept (asyncio's own server would
    hold any number of handshakes, uncounted, each for its timeout)."""
    loop = asyncio.get_running_loop()
    listener = tcp_listener(host, port, LISTEN_BACKLOG)

    async def accept() -> None:
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError:
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if server.shutting_down or not server.make_room():
                server.rejected_connections += 1
                server.count_error("maxclients")
                logs.warning("connection_rejected", client=f"{peer[0]}:{peer[1]}", reason="maxclients",
                             maxclients=server.maxclients)
                sock.close()
                continue
            handshake = Handshake(server, sock, peer[0])
            handshake.task = loop.create_task(handshake.run())

    return TlsListener(listener, loop.create_task(accept()))
