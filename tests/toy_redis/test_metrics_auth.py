"""The metrics endpoint's logins (metrics_users_file, exporter-toolkit's basic_auth_users):
no login or a wrong one gets 401 with a challenge, a listed one gets the metrics, over plain HTTP
and TLS; wrong passwords, costly to check, do not stall RESP clients, and a flood of peers without
the login does not lock out a scrape with it."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
import sys
import threading
import time

import bcrypt
import pytest
import requests

from tests.flooder import Flooder
from toy_redis.metrics import METRICS_LISTEN_BACKLOG, METRICS_MAX_CONNECTIONS, REQUEST_TIMEOUT_S

from .certs import Authority
from .conftest import RawClient, ToyRedis, free_port

USER, PASSWORD = "prometheus", "scrape-pass"
# Cost 4 keeps most tests quick; the stall test uses exporter-toolkit's usual cost 10.
FAST_COST = 4


def users_file(folder, cost: int = FAST_COST, user: str = USER):
    path = folder / "metrics-users.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$")
    path.write_text(f"basic_auth_users:\n  {user}: '{hashed}'\n")
    path.chmod(0o640)
    return path


@pytest.fixture(scope="module")
def toy_with_logins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics-auth")
    server = ToyRedis(folder, "--metrics-users-file", str(users_file(folder))).start()
    yield server
    server.stop()


def test_metrics_ask_for_a_listed_login(toy_with_logins):
    url = f"http://127.0.0.1:{toy_with_logins.metrics_port}/metrics"
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="toy-redis"'
    assert "toy_redis" not in anonymous.text
    for auth in ((USER, "wrong"), ("nobody", PASSWORD), (USER, PASSWORD + "x")):
        assert requests.get(url, auth=auth, timeout=10).status_code == 401
    response = requests.get(url, auth=(USER, PASSWORD), timeout=10)
    assert response.status_code == 200 and "toy_redis_connected_clients" in response.text
    # A remembered login is checked without bcrypt, and still only for the right password.
    assert requests.get(url, auth=(USER, PASSWORD), timeout=10).status_code == 200
    assert requests.get(url, auth=(USER, "wrong"), timeout=10).status_code == 401


def test_metrics_over_tls_with_a_login(tmp_path):
    authority = Authority(tmp_path / "pki")
    cert = authority.issue("server", "node", server=True)
    server = ToyRedis(tmp_path, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", str(cert.cert),
                      "--tls-key-file", str(cert.key), "--tls-auth-clients", "no",
                      "--metrics-users-file", str(users_file(tmp_path))).start()
    try:
        url = f"https://127.0.0.1:{server.metrics_port}/metrics"
        ca = str(authority.pair.cert)
        assert requests.get(url, verify=ca, timeout=10).status_code == 401
        assert requests.get(url, verify=ca, auth=(USER, PASSWORD), timeout=10).status_code == 200
    finally:
        server.stop()


def login_headers(password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}


def test_a_scraper_with_the_login_keeps_its_connection_between_scrapes(tmp_path):
    """Keep-alive: the scraper's TLS handshake is paid once, not at every scrape (the server says
    keep-alive and answers the next request on the same socket); a request asking to close, one
    announcing a body (which the endpoint does not read) and a refused login close it."""
    authority = Authority(tmp_path / "pki")
    cert = authority.issue("server", "node", server=True)
    server = ToyRedis(tmp_path, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", str(cert.cert),
                      "--tls-key-file", str(cert.key), "--tls-auth-clients", "no",
                      "--metrics-users-file", str(users_file(tmp_path))).start()
    context = ssl.create_default_context(cafile=str(authority.pair.cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.metrics_port, timeout=10, context=context)
    try:
        sockets = []
        for _ in range(3):
            connection.request("GET", "/metrics", headers=login_headers())
            response = connection.getresponse()
            assert response.status == 200 and b"toy_redis_connected_clients" in response.read()
            assert response.getheader("Connection") == "keep-alive"
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is sockets[2] is not None
        for headers, status in (({**login_headers(), "Connection": "close"}, 200),
                                ({**login_headers(), "Content-Length": "0"}, 200), (login_headers("wrong"), 401)):
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            assert response.status == status and response.getheader("Connection") == "close", headers
            response.read()
            assert connection.sock is None  # http.client drops a connection the server closes
    finally:
        connection.close()
        server.stop()


def test_idle_kept_connections_make_room_for_a_new_scrape(toy_with_logins):
    """Every slot held by a kept-alive connection with the login, idle: a new scraper still gets
    its metrics (the longest idle is pushed out), and the others stay usable."""
    port = toy_with_logins.metrics_port
    kept = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(METRICS_MAX_CONNECTIONS)]
    try:
        for connection in kept:
            connection.request("GET", "/metrics", headers=login_headers())
            assert connection.getresponse().read() and connection.sock is not None
        assert scrape(port, REQUEST_TIMEOUT_S) == 200
        kept[-1].request("GET", "/metrics", headers=login_headers())
        last = kept[-1].getresponse()
        assert last.status == 200 and last.read()
    finally:
        for connection in kept:
            connection.close()


def test_wrong_passwords_do_not_stall_other_clients(tmp_path):
    server = ToyRedis(tmp_path, "--metrics-users-file", str(users_file(tmp_path, cost=10))).start()
    try:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        stop = threading.Event()

        def guess():
            while not stop.is_set():
                requests.get(url, auth=(USER, "guess"), timeout=30)

        guessers = [threading.Thread(target=guess) for _ in range(6)]
        for thread in guessers:
            thread.start()
        client = RawClient(server.port)
        worst = 0.0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            started = time.perf_counter()
            assert client.call("PING") == b"PONG"
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.01)
        stop.set()
        for thread in guessers:
            thread.join(60)
        client.close()
        # A cost-10 bcrypt takes ~50-100 ms of CPU; checked on the loop, PINGs would wait that long.
        assert worst < 0.25, f"a PING waited {worst * 1000:.0f} ms during the guessing"
    finally:
        server.stop()


# Prometheus's address in this test; the flood comes from 127.0.0.1, as from another host.
SCRAPER_ADDRESS = "127.0.0.2"
SCRAPES = 3


def scrape(port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(SCRAPER_ADDRESS, 0))
    try:
        login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        connection.request("GET", "/metrics", headers={"Authorization": "Basic " + login})
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_flood_without_the_login_does_not_lock_out_a_scrape_with_it(tmp_path):
    """Twice the listen backlog of peers that hold connections idle, guess passwords (each guess a
    cost-10 bcrypt) or ask without a login, reconnecting as soon as they are closed. The first
    scrape (its login checked by bcrypt) and the next ones (remembered) are each answered within
    the time the endpoint gives any request. Before the fix, flooders connecting later pushed the
    scrape's connection out before it was answered (and every pushed-out guess still queued a
    bcrypt check)."""
    server = ToyRedis(tmp_path, "--metrics-users-file", str(users_file(tmp_path, cost=10))).start()
    flooders = 2 * METRICS_LISTEN_BACKLOG
    flood = Flooder(server.metrics_port, {"idle": flooders // 2, "guess": flooders // 4, "anonymous": flooders // 4},
                    seconds=(SCRAPES + 1) * REQUEST_TIMEOUT_S)
    try:
        for attempt in range(SCRAPES):
            started = time.monotonic()
            try:
                status = scrape(server.metrics_port, REQUEST_TIMEOUT_S)
            except (OSError, http.client.HTTPException) as exc:
                status = repr(exc)
            waited = time.monotonic() - started
            assert status == 200, f"scrape {attempt + 1} during the flood: {status} after {waited:.1f} s"
        # The flood was on: flooders were closed and came back, over and over.
        assert flood.result(at_least=2 * flooders + 1)["connections"] > 2 * flooders
    finally:
        flood.stop()
        server.stop()


@pytest.mark.parametrize("content, expected", [
    ("users: {}\n", "to hold basic_auth_users: a mapping of user names to bcrypt hashes"),
    ("basic_auth_users:\n  prometheus: plain-text\n", "basic_auth_users: prometheus: expected a bcrypt hash"),
    ("basic_auth_users: [\n", "is not valid YAML"),
])
def test_a_bad_users_file_is_one_line(tmp_path, content, expected):
    path = tmp_path / "metrics-users.yml"
    path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "toy_redis", "--port", str(free_port()),
                             "--metrics-users-file", str(path)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("command line: metrics_users_file: ") and expected in lines[0]
