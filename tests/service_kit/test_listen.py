"""tcp_listener: what toy-redis's and the relay's listeners accept sends without Nagle's delay."""

from __future__ import annotations

import socket

import pytest
from service_kit.listen import tcp_listener


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_accepted_connections_send_at_once(host):
    with tcp_listener(host, 0, 8) as listener:
        assert not listener.getblocking()
        with socket.create_connection(listener.getsockname()[:2], timeout=5):
            listener.setblocking(True)
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
