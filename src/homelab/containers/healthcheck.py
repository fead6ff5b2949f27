"""A container's HEALTHCHECK: is the service answering on the address its own config names?

Copied into each image and run there by the service's venv Python, so it reads the mounted config
with the service's own loader (same defaults, same validation) instead of a second copy of them.
Exit 0 when healthy, 1 with one line on stderr otherwise (Docker keeps the line in its health log).

    healthcheck.py toy-redis CONFIG    RESP PING (over TLS when the plain port is off): +PONG, or
                                       -NOAUTH when a password is required
    healthcheck.py alert-relay CONFIG  GET /healthz answers 200
"""

from __future__ import annotations

import socket
import ssl
import sys
import urllib.request

TIMEOUT_S = 3
# A wildcard listen address is reached on loopback (containers run with host networking).
WILDCARDS = {"", "0.0.0.0", "::"}


def reachable(address: str) -> str:
    return "127.0.0.1" if address in WILDCARDS else address


def toy_redis(config_path: str) -> None:
    from toy_redis.config import load_file

    config = load_file(config_path)
    port = config.port or config.tls_port  # `port: 0` (Redis's way): TLS only
    with socket.create_connection((reachable(config.bind), port), timeout=TIMEOUT_S) as connection:
        if not config.port:
            connection = tls_to_toy_redis(config).wrap_socket(connection)
        connection.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = connection.recv(64)
    # Without the password the server still answers, with an error: that is alive enough.
    if not (reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")):
        raise RuntimeError(f"PING got {reply[:40]!r}")


def tls_to_toy_redis(config) -> ssl.SSLContext:
    """Liveness only: the server's certificate names the node, not loopback, so it is not checked;
    the server's own certificate is shown when it asks for one (tls_auth_clients)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if config.tls_auth_clients != "no":
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


def alert_relay(config_path: str) -> None:
    from alert_relay.config import RelayConfig, load_yaml_model

    host, port = load_yaml_model(config_path, RelayConfig).listen_address
    with urllib.request.urlopen(f"http://{reachable(host)}:{port}/healthz", timeout=TIMEOUT_S) as response:
        if response.status != 200:
            raise RuntimeError(f"/healthz answered {response.status}")


CHECKS = {"toy-redis": toy_redis, "alert-relay": alert_relay}


def main(argv: list[str]) -> int:
    service, config_path = argv
    try:
        CHECKS[service](config_path)
    except Exception as exc:  # any failure is "unhealthy"; say which
        print(f"{service} unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
