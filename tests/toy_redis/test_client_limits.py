"""What a client may make the server hold: idle connections (`timeout`), connections that never
authenticate (`auth_timeout`), connection floods (`maxclients`) and the metrics endpoint's
connections. Real processes and sockets; every wait is bounded."""

from __future__ import annotations

import selectors
import socket
import time

import hiredis
import pytest
import requests

from tests.flooder import Flooder
from toy_redis.config import Tuning
from toy_redis.metrics import METRICS_MAX_CONNECTIONS

from .certs import Authority
from .conftest import RawClient, ToyRedis, encode, free_port

PASSWORD = "flood-test-pass"
# The server checks timeouts once a second (whole seconds, as Redis does).
CHECK_PERIOD_S = 1.0
# How long past a deadline a closed socket may take to be seen as closed on a loaded 2-core box.
SLACK_S = 3.0


def open_sockets(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
    return sockets


def wait_all_closed(sockets: list[socket.socket], deadline: float) -> set[socket.socket]:
    """Wait until every socket reads end-of-file (the server closed it) or the deadline passes;
    the sockets still open then. Anything the server sent before closing is an error here."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    still_open = set(sockets)
    while still_open and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"the server sent {data!r} before closing an idle client"
            selector.unregister(key.fileobj)
            still_open.discard(key.fileobj)
    selector.close()
    return still_open


def read_until_closed(sockets: list[socket.socket], deadline: float) -> dict[socket.socket, bytes | None]:
    """What each socket received until the server closed it; None for those still open at the deadline."""
    selector = selectors.DefaultSelector()
    received = {}
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = b""
    still_open = set(sockets)
    while still_open and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            data = key.fileobj.recv(4096)
            received[key.fileobj] += data
            if not data:
                selector.unregister(key.fileobj)
                still_open.discard(key.fileobj)
    selector.close()
    return {sock: None if sock in still_open else data for sock, data in received.items()}


def connected_clients(server: ToyRedis, **kwargs) -> int:
    client = server.client(**kwargs)
    try:
        return client.info("clients")["connected_clients"]
    finally:
        client.close()


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def test_timeout_defaults_to_never_as_in_redis():
    assert Tuning().timeout == 0


def test_idle_clients_are_closed_after_timeout_and_active_ones_are_not(tmp_path):
    server = ToyRedis(tmp_path).start()
    try:
        active = RawClient(server.port)
        idle = open_sockets(server.port, 200)
        # timeout 0 (the default) keeps idle clients.
        time.sleep(CHECK_PERIOD_S * 2)
        assert connected_clients(server) == 202
        assert active.call("CONFIG", "SET", "timeout", "1") == b"OK"
        assert active.call("CONFIG", "GET", "timeout") == [b"timeout", b"1"]
        set_at = time.monotonic()
        deadline = set_at + 1 + CHECK_PERIOD_S + SLACK_S
        # The active client keeps talking while the idle ones are closed around it.
        for _ in range(6):
            time.sleep(0.4)
            assert active.call("PING") == b"PONG"
        assert wait_all_closed(idle, deadline) == set()
        assert active.call("PING") == b"PONG"
        log = [event for event in server.events() if event["event"] == "clients_timed_out"]
        assert sum(event["idle"] for event in log) == 200
        # One line per sweep, not one per client.
        assert len(log) <= 5
        active.close()
    finally:
        server.stop()


def test_clients_that_do_not_authenticate_in_time_are_closed(tmp_path, password_file):
    server = ToyRedis(tmp_path, "--requirepass-file", str(password_file), "--auth-timeout", "1").start()
    try:
        authenticated = RawClient(server.port)
        assert authenticated.call("AUTH", PASSWORD) == b"OK"
        strangers = open_sockets(server.port, 100)
        deadline = time.monotonic() + 1 + CHECK_PERIOD_S + SLACK_S
        assert wait_all_closed(strangers, deadline) == set()
        # Authenticated clients are held only by `timeout` (0: forever), even when idle meanwhile.
        assert authenticated.call("PING") == b"PONG"
        assert connected_clients(server, password=PASSWORD) == 2
        authenticated.close()
    finally:
        server.stop()


def test_connect_flood_beyond_maxclients_is_refused_with_redis_error(tmp_path, password_file):
    maxclients = 50
    server = ToyRedis(tmp_path, "--requirepass-file", str(password_file), "--maxclients", str(maxclients)).start()
    try:
        served = RawClient(server.port)
        assert served.call("AUTH", PASSWORD) == b"OK"
        flood = open_sockets(server.port, 300)
        # The served client is answered during the flood.
        started = time.perf_counter()
        assert served.call("PING") == b"PONG"
        assert time.perf_counter() - started < 1.0
        replies = read_until_closed(flood, time.monotonic() + SLACK_S)
        refused = sum(1 for reply in replies.values() if reply is not None)
        accepted = sum(1 for reply in replies.values() if reply is None)
        assert {reply for reply in replies.values() if reply is not None} == {b"-ERR max number of clients reached\r\n"}
        assert accepted == maxclients - 1 and refused == 300 - accepted
        metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
        assert f"toy_redis_rejected_connections_total {float(refused)}" in metrics
        for sock in flood:
            sock.close()
        # Freed slots are given to new clients.
        deadline = time.monotonic() + SLACK_S
        while connected_clients_or_none(server) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        newcomer = RawClient(server.port)
        assert newcomer.call("AUTH", PASSWORD) == b"OK"
        newcomer.close()
        served.close()
    finally:
        server.stop()


def test_strangers_holding_every_client_slot_do_not_lock_out_a_client_with_the_password(tmp_path, password_file):
    """Twice maxclients of peers that connect and never authenticate (idle, or sending PING), each
    held until auth_timeout and reconnecting at once when closed. A client from another address
    that sends AUTH at once is let in (an unauthenticated stranger makes room) and answered within
    auth_timeout; before, every slot was taken and it was refused, over and over."""
    maxclients = 50
    auth_timeout = Tuning().auth_timeout
    server = ToyRedis(tmp_path, "--requirepass-file", str(password_file), "--maxclients", str(maxclients)).start()
    flood = Flooder(server.port, {"idle": maxclients, "noauth": maxclients}, seconds=2 * auth_timeout)
    try:
        for attempt in range(3):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.port), timeout=auth_timeout,
                                          source_address=("127.0.0.2", 0)) as sock:
                sock.sendall(encode("AUTH", PASSWORD) + encode("PING") + encode("INFO"))
                reader, replies = hiredis.Reader(), []
                while len(replies) < 3:
                    reply = reader.gets()
                    if reply is not False:
                        replies.append(reply)
                        continue
                    chunk = sock.recv(65536)
                    assert chunk, f"attempt {attempt + 1} during the flood: closed after {replies!r}"
                    reader.feed(chunk)
            assert replies[:2] == [b"OK", b"PONG"], f"attempt {attempt + 1} during the flood: {replies!r}"
            assert time.monotonic() - started < auth_timeout
            # The flood was on: every slot was held while the client was served (the server's
            # own count, not the flood's timing).
            info = dict(line.split(":", 1) for line in replies[2].decode().splitlines() if ":" in line)
            assert int(info["connected_clients"]) == maxclients, f"attempt {attempt + 1}: {info['connected_clients']}"
        # ...and strangers were pushed out to make room.
        assert int(info["rejected_connections"]) > 0
    finally:
        flood.stop()
        server.stop()


def connected_clients_or_none(server: ToyRedis) -> int | None:
    try:
        return connected_clients(server, password=PASSWORD) - 1
    except Exception:
        return None


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_idle_connections_to_the_metrics_port_neither_pile_up_nor_lock_out_a_scrape(tmp_path, tls):
    """Over TLS the idle connections are in their handshake, which asyncio's own server would hold
    for its whole timeout, uncounted; here they take slots like any other connection."""
    flags, scheme, verify = (), "http", True
    if tls:
        authority = Authority(tmp_path / "pki")
        cert = authority.issue("server", "node", server=True)
        flags = ("--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", str(cert.cert),
                 "--tls-key-file", str(cert.key), "--tls-auth-clients", "no")
        scheme, verify = "https", str(authority.pair.cert)
    server = ToyRedis(tmp_path, *flags).start()
    try:
        idle = open_sockets(server.metrics_port, METRICS_MAX_CONNECTIONS * 10)
        response = requests.get(f"{scheme}://127.0.0.1:{server.metrics_port}/metrics", verify=verify, timeout=5)
        assert response.status_code == 200 and "toy_redis_connected_clients" in response.text
        # All but the newest few were dropped to make room: the server holds at most the cap.
        deadline = time.monotonic() + SLACK_S
        left = wait_all_closed(idle, deadline)
        assert len(left) <= METRICS_MAX_CONNECTIONS
        for sock in idle:
            sock.close()
    finally:
        server.stop()
