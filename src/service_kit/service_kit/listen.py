"""A listening TCP socket for servers that accept connections themselves (to count each one from
its accept) and hand them to asyncio with ``connect_accepted_socket``."""

from __future__ import annotations

import socket


def tcp_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking socket listening on host:port (IPv6 when ``host`` has a colon) whose accepted
    connections send at once (TCP_NODELAY, which Linux's accept copies from the listener).

    asyncio sets TCP_NODELAY itself only on sockets whose ``proto`` is IPPROTO_TCP, which those of
    ``socket.create_server`` and their accepted ones are not (0). Without it, a reply written over
    TLS 1.3 right after the session tickets waits for the client's delayed ACK of them (40 ms):
    every new connection's first answer (each blackbox probe) was 40 ms late."""
    listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    backlog=backlog)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setblocking(False)
    return listener
