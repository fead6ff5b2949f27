"""RESP and the metrics over TLS, under Redis's settings: redis-cli --tls and redis-py connect,
the plain port is off with `port 0`, client certificates are checked as tls-auth-clients says,
and connections that never finish a handshake are held no longer, and no more of them, than
others that never log in."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest
import redis
import requests

from roles.toy_redis import RESERVED_FDS

from .certs import Authority
from .conftest import ToyRedis, free_port
from .test_client_limits import CHECK_PERIOD_S, SLACK_S, open_sockets, read_until_closed, wait_all_closed

PASSWORD = "tls-test-pass"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    authority = Authority(folder)
    return {
        "ca": authority.pair,
        "server": authority.issue("server", "worker-node-12", server=True),
        "client": authority.issue("client", "worker-node-14", server=False),
        # Signed by a CA the server does not trust.
        "stranger": Authority(folder / "other", "another CA").issue("stranger", "stranger", server=False),
    }


def tls_server(workdir, pki, *flags: str) -> ToyRedis:
    password_file = workdir / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return ToyRedis(
        workdir, "--port", "0", "--tls-port", str(free_port()),
        "--tls-cert-file", str(pki["server"].cert), "--tls-key-file", str(pki["server"].key),
        "--tls-ca-cert-file", str(pki["ca"].cert), "--requirepass-file", str(password_file), *flags,
    ).start()


@pytest.fixture(scope="module")
def toy_tls(tmp_path_factory, pki):
    """TLS only, clients need no certificate (as the role runs it: the password authenticates them)."""
    server = tls_server(tmp_path_factory.mktemp("toy-tls"), pki, "--tls-auth-clients", "no", "--auth-timeout", "2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def toy_mtls(tmp_path_factory, pki):
    """Redis's default tls-auth-clients yes: a certificate from the CA is required."""
    server = tls_server(tmp_path_factory.mktemp("toy-mtls"), pki)
    yield server
    server.stop()


def tls_client(server: ToyRedis, pki, pair=None, **kwargs) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.tls_port, password=PASSWORD, socket_timeout=10, ssl=True,
                       ssl_ca_certs=str(pki["ca"].cert), ssl_certfile=pair and str(pair.cert),
                       ssl_keyfile=pair and str(pair.key), **kwargs)


def to_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs Debian's redis-cli (apt-get install redis-tools)")
def test_redis_cli_connects_with_tls_and_the_ca(toy_tls, pki):
    def cli(*args: str) -> subprocess.CompletedProcess:
        # REDISCLI_AUTH: the password stays off the command line.
        return subprocess.run(["redis-cli", "--tls", "--cacert", str(pki["ca"].cert), "-p", str(toy_tls.tls_port),
                               *args], capture_output=True, text=True, timeout=20,
                              env={**os.environ, "REDISCLI_AUTH": PASSWORD})

    assert cli("SET", "greeting", "over tls").stdout.strip() == "OK"
    assert cli("GET", "greeting").stdout.strip() == "over tls"
    # Without the CA redis-cli refuses the server's certificate.
    refused = subprocess.run(["redis-cli", "--tls", "-p", str(toy_tls.tls_port), "PING"],
                             capture_output=True, text=True, timeout=20)
    assert "PONG" not in refused.stdout and "certificate verify failed" in refused.stdout + refused.stderr


def test_redis_py_with_big_values_and_pipelines(toy_tls, pki):
    client = tls_client(toy_tls, pki)
    value = os.urandom(3 * 1024 * 1024)
    assert client.set("big", value)
    assert client.get("big") == value
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"k{i}", i)
    pipe.get("k1999")
    assert pipe.execute()[-1] == b"1999"
    client.close()


def test_plain_port_is_off_with_port_0(toy_tls, pki):
    started = next(event for event in toy_tls.events() if event["event"] == "started")
    assert started["port"] == 0 and started["tls_port"] == toy_tls.tls_port
    client = tls_client(toy_tls, pki)
    shown = {to_text(name): to_text(value) for name, value in client.config_get("*port").items()}
    assert shown["port"] == "0" and shown["tls-port"] == str(toy_tls.tls_port)
    client.close()
    # Plain RESP on the TLS port is not a handshake: closed, no reply.
    with socket.create_connection(("127.0.0.1", toy_tls.tls_port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(100) == b""


def test_client_certificates_are_checked_when_tls_auth_clients_is_yes(toy_mtls, pki):
    with_cert = tls_client(toy_mtls, pki, pki["client"])
    assert with_cert.ping()
    with_cert.close()
    for pair in (None, pki["stranger"]):
        refused = tls_client(toy_mtls, pki, pair)
        with pytest.raises(redis.ConnectionError):
            refused.ping()
        refused.close()


def test_metrics_are_served_over_tls(toy_tls, toy_mtls, pki):
    url = f"https://127.0.0.1:{toy_tls.metrics_port}/metrics"
    response = requests.get(url, verify=str(pki["ca"].cert), timeout=10)
    assert response.status_code == 200 and "toy_redis_connected_clients" in response.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)  # the system CAs do not know the cluster CA
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https", "http"), timeout=10)
    # With tls-auth-clients yes the metrics ask for the certificate too.
    mtls_url = f"https://127.0.0.1:{toy_mtls.metrics_port}/metrics"
    assert requests.get(mtls_url, verify=str(pki["ca"].cert), cert=(str(pki["client"].cert), str(pki["client"].key)),
                        timeout=10).status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(mtls_url, verify=str(pki["ca"].cert), timeout=10)


def test_connections_that_never_handshake_are_closed_like_those_that_never_log_in(toy_tls, pki):
    served = tls_client(toy_tls, pki)
    assert served.ping()
    silent = open_sockets(toy_tls.tls_port, 100)
    garbage = open_sockets(toy_tls.tls_port, 20)
    for sock in garbage:
        sock.sendall(os.urandom(512))
    started = time.perf_counter()
    assert served.ping()
    assert time.perf_counter() - started < 1.0
    deadline = time.monotonic() + 2 + CHECK_PERIOD_S + SLACK_S
    replies = read_until_closed(silent + garbage, deadline)
    assert [reply for reply in replies.values() if reply is None] == []
    # Closed without a reply: the silent ones got nothing, the garbage at most a TLS alert.
    assert {replies[sock] for sock in silent} == {b""}
    assert not any(replies[sock].startswith((b"-", b"+")) for sock in garbage)
    assert served.ping()
    served.close()


def test_handshakes_count_against_maxclients_and_make_room_for_clients(tmp_path, pki):
    """Idle connections that never start a handshake, four times maxclients: the server holds at
    most maxclients of them (as Redis counts a TLS client from its accept), the newest; a client
    that handshakes and logs in is let in past them. Before, each was held uncounted until
    auth_timeout, a descriptor each."""
    maxclients = 50
    server = tls_server(tmp_path, pki, "--tls-auth-clients", "no", "--maxclients", str(maxclients))
    try:
        idle = open_sockets(server.tls_port, 4 * maxclients)
        left = wait_all_closed(idle, time.monotonic() + SLACK_S)
        assert len(left) <= maxclients
        served = tls_client(server, pki)
        assert served.ping()
        held = len(os.listdir(f"/proc/{server.process.pid}/fd"))
        # Its clients and what the role reserves for its own files: far fewer than the sockets it was sent.
        assert held <= maxclients + RESERVED_FDS, f"{held} descriptors open"
        served.close()
        for sock in idle:
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize("change, key", [
    (lambda pki: ["--tls-cert-file", str(pki["server"].key)], "tls_cert_file"),
    (lambda pki: ["--tls-key-file", str(pki["client"].key)], "tls_key_file"),
    (lambda pki: ["--tls-ca-cert-file", "/nonexistent/ca.crt"], "tls_ca_cert_file"),
])
def test_an_unusable_tls_file_stops_the_start_in_one_line_naming_it(tmp_path, pki, change, key):
    base = ["--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", str(pki["server"].cert),
            "--tls-key-file", str(pki["server"].key), "--tls-ca-cert-file", str(pki["ca"].cert)]
    result = subprocess.run([sys.executable, "-m", "toy_redis", *base, *change(pki)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"command line: {key}: "), result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--port", "0"], "command line: port: expected a port, or a tls_port, to listen on (both are 0)"),
    (["--tls-port", "6390"], "command line: tls_cert_file: expected a file path: tls_port is 6390"),
])
def test_missing_listener_settings_are_one_line(flags, message):
    result = subprocess.run([sys.executable, "-m", "toy_redis", *flags], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and result.stderr.strip() == message



@pytest.mark.parametrize("auth_clients", ["no", "yes"])
def test_container_healthcheck_pings_over_tls_when_the_plain_port_is_off(tmp_path, pki, auth_clients):
    from homelab.containers import healthcheck

    config = tmp_path / "toy-redis.yaml"
    config.write_text(
        f"port: 0\ntls_port: {free_port()}\nmetrics_port: 0\ntls_auth_clients: {auth_clients}\n"
        f"tls_cert_file: {pki['server'].cert}\ntls_key_file: {pki['server'].key}\ntls_ca_cert_file: {pki['ca'].cert}\n"
    )
    server = ToyRedis(tmp_path, config=config).start()
    try:
        # Where a client certificate is asked for, the server's own serves (a node's is for both uses).
        assert healthcheck.main(["toy-redis", str(config)]) == 0
    finally:
        server.stop()


def served_serial(port: int, ca) -> int:
    """The serial of the certificate a new TLS handshake on ``port`` presents."""
    from cryptography import x509

    context = ssl.create_default_context(cafile=str(ca.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def serial_of(pair) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(tmp_path):
    """As a deploy rotates the node's certificate (roles/pki: the key replaced first, then the
    certificate): until both match, new handshakes keep the old certificate; then RESP and the
    metrics present the new one, the process and its open connections living on."""
    authority = Authority(tmp_path / "pki")
    first = authority.issue("first", "worker-node-12", server=True)
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "node.crt", live / "node.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    server = tls_server(tmp_path, {"ca": authority.pair, "server": type(first)(cert, key)}, "--tls-auth-clients", "no")
    try:
        pid = server.process.pid
        with redis.Redis(port=server.tls_port, ssl=True, ssl_ca_certs=str(authority.pair.cert), password=PASSWORD,
                         socket_timeout=10) as open_client:
            assert open_client.ping()
            assert served_serial(server.tls_port, authority.pair) == serial_of(first)
            second = authority.issue("second", "worker-node-12", server=True)
            staged = live / "staged"
            shutil.copy(second.key, staged)
            os.replace(staged, key)  # the new key, its certificate not yet in place
            for port in (server.tls_port, server.metrics_port):
                assert served_serial(port, authority.pair) == serial_of(first)
            shutil.copy(second.cert, staged)
            os.replace(staged, cert)
            for port in (server.tls_port, server.metrics_port):
                assert served_serial(port, authority.pair) == serial_of(second)
            assert open_client.ping()
        assert server.process.pid == pid and server.process.poll() is None
        events = [line for line in server.log_file.read_text().splitlines() if '"tls_re' in line]
        assert len(events) == 2 and '"tls_reload_failed"' in events[0] and '"tls_reloaded"' in events[1], events
    finally:
        server.stop()
