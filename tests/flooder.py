"""Peers without credentials, many at once, in a process of their own: each thread connects to
127.0.0.1 (or the address given), does what its kind says, waits until the server closes the connection (or a few
seconds), and connects again, until the time is up. Used by the hostile-input tests of
toy-redis's metrics endpoint, its RESP port, the alert relay and nginx's fronted ports.

    flood = Flooder(port, {"idle": 100, "guess": 100}, seconds=20)   # returns once each has connected (or 5 s)
    flood = Flooder(port, {...}, seconds=20, tls=True)              # requests over TLS (any certificate)
    flood = Flooder(port, {...}, seconds=20, address="10.77.0.10")  # another host than 127.0.0.1
    ...                                                                # the legitimate client under test
    flood.result(at_least=n)             # {"connections": n}; waits for n (or the flood's end), then ends it
    median_wait(flood, probes, seconds, at_least=n)  # the legitimate requests' median wait meanwhile

Kinds: ``idle`` sends nothing (over TLS: not even a handshake); ``guess`` sends an HTTP GET with a basic-auth login whose password
is wrong; ``anonymous`` sends an HTTP GET without a login; ``noauth`` sends a RESP PING without
AUTH.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

HOLD_S = 5.0
PROGRESS_S = 0.1


def request(kind: str) -> bytes:
    if kind == "guess":
        login = base64.b64encode(b"prometheus:" + os.urandom(6).hex().encode())
        # Closed after the answer, so the next guess comes at once on a new connection.
        return b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic " + login + b"\r\n\r\n"
    if kind == "anonymous":
        return b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == "noauth":
        return b"*1\r\n$4\r\nPING\r\n"
    return b""


def flood(address: str, port: int, kind: str, end: float, counts: list[int], tls: bool) -> None:
    # A flooder does not check who it floods.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    while time.monotonic() < end:
        try:
            sock = socket.create_connection((address, port), timeout=HOLD_S)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            counts.append(1)
            if tls and kind != "idle":
                sock = context.wrap_socket(sock)
            sock.sendall(request(kind))
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            sock.close()


def run(port: int, kinds: dict[str, int], seconds: float, tls: bool, address: str) -> None:
    end = time.monotonic() + seconds
    threads = sum(kinds.values())
    counts: list[int] = []
    workers = [threading.Thread(target=flood, args=(address, port, kind, end, counts, tls), daemon=True)
               for kind, count in kinds.items() for _ in range(count)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    while len(counts) < threads and time.monotonic() < started + HOLD_S:
        time.sleep(0.01)
    print("ready", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    # The running count, so that the test can wait for the flood to have done enough.
    while not stopped.wait(min(PROGRESS_S, max(0.0, end - time.monotonic()))) and time.monotonic() < end:
        print(json.dumps({"connections": len(counts)}), flush=True)
    print(json.dumps({"connections": len(counts)}), flush=True)
    os._exit(0)  # the threads may be waiting for a server to close their connection


class Flooder:
    def __init__(self, port: int, kinds: dict[str, int], seconds: float, tls: bool = False,
                 address: str = "127.0.0.1"):
        self.process = subprocess.Popen([sys.executable, __file__, str(port), json.dumps(kinds), str(seconds),
                                         "tls" if tls else "plain", address],
                                        stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"the flooders could not connect to port {port}")

    def result(self, at_least: int = 0, timeout: float = 60) -> dict:
        """The flood's count, once it has made `at_least` connections or its time is up (so a
        test on a slow machine waits for the pressure it asserts rather than failing early)."""
        last = {"connections": 0}
        for line in self.process.stdout:
            last = json.loads(line)
            if last["connections"] >= at_least:
                break
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=timeout)
        for line in out.splitlines():
            last = json.loads(line)
        return last

    def stop(self) -> None:
        """For cleanup after a failure: kills the process if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def median_wait(flood: Flooder, probes: dict[str, Callable[[], int]], seconds: float, at_least: int) -> float:
    """While ``flood`` runs: each probe (a legitimate request, named, returning its HTTP status) in
    turn for ``seconds``, each asserted to answer 200; then the flood's ``at_least`` connections
    (Flooder.result). The probes' median time to answer. The flood is ended whatever happens."""
    waits = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, probe in probes.items():
                started = time.monotonic()
                assert probe() == 200, name
                waits.append(time.monotonic() - started)
        flood.result(at_least=at_least)
    finally:
        flood.stop()
    return statistics.median(waits)


if __name__ == "__main__":
    run(int(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "tls", sys.argv[5])
