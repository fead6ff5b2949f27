#!/usr/bin/env python3
"""A stand-in for an app nginx proxies to over a unix socket (like Grafana on master-node).

It listens the way Go's net.Listen does (Grafana is a Go program): with the backlog the kernel allows,
net.core.somaxconn read at start, so the accept queue is what the tuning's somaxconn makes it. Each
request holds the single-threaded server for WORK_MS, as a busy app does, so a burst of connections
waits in the accept queue; when the queue is full, nginx's non-blocking connect() fails with EAGAIN
("11: Resource temporarily unavailable") and the client gets a 502.

Usage (on the node, as root): python3 unix_upstream.py SOCKET_PATH [WORK_MS]
Stdlib only: nodes have no PyPI.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
GO_BACKLOG_CAP = 65535  # Go caps the value it reads at what a uint16 holds
MAX_REQUEST_BYTES = 8192
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def main() -> None:
    path = sys.argv[1]
    work_s = (float(sys.argv[2]) if len(sys.argv) > 2 else 5.0) / 1000
    backlog = min(int(SOMAXCONN.read_text()), GO_BACKLOG_CAP)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o666)  # nginx's workers run as www-data
    server.listen(backlog)
    print(f"listening on {path} with backlog {backlog}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)  # a client that never sends its request cannot hold the server
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                time.sleep(work_s)
                conn.sendall(RESPONSE)
            except OSError:
                pass


if __name__ == "__main__":
    main()
