#!/usr/bin/env python3
"""alert-relay under slowloris: legitimate-request latency, RSS and threads while connections are held.

An attacker without a token keeps HELD connections open to the relay, a third of them silent, a
third trickling a header (a byte every second), a third with a complete header and half a body; a
connection the relay closes is opened again, at most REOPEN_PER_S a second (as slowloris tools
replenish; reconnecting as fast as possible is a connection flood, which fills the kernel's accept
queue whatever the server does, and is for a firewall to rate-limit). Meanwhile Alertmanager-like POSTs arrive at a
fixed rate, open loop (latency from each request's scheduled time), half on fresh connections and
half on one kept-alive connection. Reference, same run: the same relay process and the same
legitimate load before any connection is held. Printed: connections actually held (the relay's
alert_relay_http_connections), p50/p99/max, RSS and threads, and ratios against the reference.

Target (issue 10): no unauthenticated client delays legitimate work by more than 50 ms; RSS growth
under 30 MB for 3000 held connections; threads bounded.

Run from the repo root: .venv/bin/python bench/relay_slowloris.py [--held 1000 3000 6000] [--rate 50] [--seconds 6]
  --relay-src DIR runs the relay from another tree's src/alert_relay (e.g. an older commit's) to compare.
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relay_common import relay_from  # noqa: E402
from tests.alert_relay.conftest import AM_TOKEN, CHANNELS, FAXPLUS_TOKEN, SLACK_TOKEN, Relay, notification  # noqa: E402
from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack  # noqa: E402

TRICKLE_INTERVAL_S = 1.0
REOPEN_PER_S = 100


def process_status(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


class Attacker(threading.Thread):
    """Keeps ``count`` connections open to the relay, reopening each one the relay closes."""

    def __init__(self, port: int, count: int, max_body_bytes: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.openings = [b"", b"POST /alertmanager HTTP/1.1\r\nHost: relay\r\nX-Slow: a",
                         f"POST /alertmanager HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {AM_TOKEN}\r\n"
                         f"Content-Length: {max_body_bytes}\r\n\r\n{{\"version\"".encode()]
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.reopened = 0
        self.to_reopen: list[int] = []
        self.ready = threading.Event()

    def _open(self, kind: int) -> None:
        sock = socket.socket()
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", self.port))
            if self.openings[kind]:
                sock.sendall(self.openings[kind])
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, kind)

    def run(self) -> None:
        for n in range(self.count):
            self._open(n % 3)
        self.ready.set()
        next_trickle = last_reopen = time.monotonic() + TRICKLE_INTERVAL_S
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.05):
                try:
                    closed = not key.fileobj.recv(65536)
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    self.selector.unregister(key.fileobj)
                    key.fileobj.close()
                    self.to_reopen.append(key.data)
            now = time.monotonic()
            budget = int((now - last_reopen) * REOPEN_PER_S)
            if budget:
                last_reopen = now
                for kind in self.to_reopen[:budget]:
                    self.reopened += 1
                    self._open(kind)
                del self.to_reopen[:budget]
            if time.monotonic() >= next_trickle:
                next_trickle += TRICKLE_INTERVAL_S
                for key in list(self.selector.get_map().values()):
                    if key.data == 1:
                        try:
                            key.fileobj.send(b"a")
                        except OSError:
                            pass
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def offer(port: int, rate: float, seconds: float) -> dict[str, float]:
    """POST rate*seconds alerts at ``rate``/s (even ones on fresh connections, odd ones kept alive)."""
    total = int(rate * seconds)
    headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, errors = [], 0
    start = time.perf_counter() + 0.1
    for n in range(total):
        due = start + n / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        body = json.dumps(notification(f"Legit{time.time_ns()}-{n}")).encode()
        connection = kept if n % 2 else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", "/alertmanager", body, headers)
            response = connection.getresponse()
            response.read()
            errors += response.status != 200
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
        if connection is not kept:
            connection.close()
        latencies.append(time.perf_counter() - due)
    kept.close()
    latencies.sort()
    return {"p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99) - 1],
            "max": latencies[-1], "errors": errors, "sent": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, nargs="+", default=[1000, 3000, 6000])
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--relay-src", help="run the relay from this tree's src/alert_relay (see bench/relay_common.py)")
    args = parser.parse_args()

    slack = FakeSlack(SLACK_TOKEN, CHANNELS).start()
    faxplus = FakeFaxPlus(FAXPLUS_TOKEN).start()
    workdir = tempfile.TemporaryDirectory(prefix="relay-slowloris-")
    relay_from(args.relay_src, Path(workdir.name))
    relay = Relay(Path(workdir.name) / "relay", slack, faxplus).start()
    port = int(relay.url.rsplit(":", 1)[1])
    rows = []
    try:
        offer(port, args.rate, 1)  # warm up
        reference = offer(port, args.rate, args.seconds)
        rows.append(("none (reference)", 0, *process_status(relay.process.pid), reference, 0))
        for count in args.held:
            attacker = Attacker(port, count, relay.config["max_body_bytes"])
            attacker.start()
            attacker.ready.wait(120)
            time.sleep(1)
            held = int(relay.metric("alert_relay_http_connections")) if not args.relay_src else count
            measured = offer(port, args.rate, args.seconds)
            rss, threads = process_status(relay.process.pid)
            attacker.stopping = True
            attacker.join()
            rows.append((f"{count} attacker connections", held, rss, threads, measured, attacker.reopened))
            time.sleep(1)
    finally:
        try:
            relay.stop()
        except subprocess.TimeoutExpired:
            print("the relay did not stop within 30 s of SIGTERM: killed")
        slack.close()
        faxplus.close()
        workdir.cleanup()

    print(f"legitimate load: {args.rate:g} alerts/s for {args.seconds:g} s (half fresh connections, half kept alive); "
          f"relay from {args.relay_src or 'this tree'}")
    print(f"{'hostile load':26}{'held':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>7}{'RSS MB':>8}{'threads':>8}"
          f"{'p99 x':>7}{'+RSS MB':>8}{'reopened':>9}")
    ref_p99, ref_rss = rows[0][4]["p99"], rows[0][2]
    for name, held, rss, threads, result, reopened in rows:
        print(f"{name:26}{held:6d}{result['p50'] * 1e3:9.2f}{result['p99'] * 1e3:9.2f}{result['max'] * 1e3:9.2f}"
              f"{result['errors']:7d}{rss:8.1f}{threads:8d}{result['p99'] / ref_p99:7.2f}{rss - ref_rss:8.1f}{reopened:9d}")
    worst = max(rows[1:], key=lambda row: row[4]["p99"])
    delay = (worst[4]["p99"] - ref_p99) * 1e3
    print(f"worst p99 added by hostile load: {delay:.1f} ms (target < 50 ms): "
          f"{'OK' if delay < 50 and not any(row[4]['errors'] for row in rows) else 'MISSED'}")


if __name__ == "__main__":
    main()
