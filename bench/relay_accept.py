#!/usr/bin/env python3
"""alert-relay's accept path: sustained rate and p99 latency at 200 alerts/s.

Offers Alertmanager webhook notifications (each a new alert group, so none is a repeat) at a fixed
rate from keep-alive connections, open loop: latency is measured from each request's scheduled
time, so a stall shows up in the tail instead of slowing the offered load. The relay delivers to
the fake Slack of the tests meanwhile. Reference, same run, same load: a bare stdlib HTTP server
that answers 200 without parsing or queuing; the ratio is what durable queuing (parse, route,
SQLite WAL commit with fsync) costs.

Target (issue 5): accept p99 < 20 ms at 200 alerts/s.

Run from the repo root: .venv/bin/python bench/relay_accept.py [--rate 200] [--seconds 15] [--relay-src DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relay_common import relay_from  # noqa: E402
from tests.alert_relay.conftest import AM_TOKEN, CHANNELS, FAXPLUS_TOKEN, SLACK_TOKEN, Relay, notification  # noqa: E402
from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack  # noqa: E402

CONNECTIONS = 16


class BareHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as the relay does

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"status": "queued"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def offer(url: str, rate: float, seconds: float) -> dict[str, float]:
    """POST rate*seconds notifications at ``rate``/s; latencies from the schedule, in seconds."""
    total = int(rate * seconds)
    bodies = [json.dumps(notification(f"Bench{n}", instance=f"node-{n % 7}:9100",
                                      severity=("warning", "critical")[n % 2])).encode() for n in range(total)]
    todo: queue.Queue = queue.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    target = urlsplit(url)

    def client():
        # http.client rather than requests: the load generator shares the 2 cores with the relay.
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
        while (item := todo.get()) is not None:
            due, body = item
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                connection.request("POST", target.path, body, headers)
                response = connection.getresponse()
                response.read()
                problem = None if response.status == 200 else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                problem = repr(exc)
                connection.close()
            done = time.perf_counter()
            with lock:
                latencies.append(done - due)
                if problem:
                    errors.append(problem)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    start = time.perf_counter() + 0.2
    for n, body in enumerate(bodies):
        todo.put((start + n / rate, body))
    for _ in threads:
        todo.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "sent": total, "errors": len(errors), "rate": total / elapsed,
        "p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99) - 1], "max": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--relay-src", help="run the relay from this tree's src/alert_relay (see bench/relay_common.py)")
    args = parser.parse_args()

    bare = ThreadingHTTPServer(("127.0.0.1", 0), BareHandler)
    bare.daemon_threads = True
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    slack = FakeSlack(SLACK_TOKEN, CHANNELS).start()
    faxplus = FakeFaxPlus(FAXPLUS_TOKEN).start()
    workdir = tempfile.TemporaryDirectory(prefix="relay-bench-")
    relay_from(args.relay_src, Path(workdir.name))
    relay = Relay(Path(workdir.name), slack, faxplus).start()
    try:
        offer(f"http://127.0.0.1:{bare.server_address[1]}/alertmanager", args.rate, 1)  # warm up both
        reference = offer(f"http://127.0.0.1:{bare.server_address[1]}/alertmanager", args.rate, args.seconds)
        measured = offer(f"{relay.url}/alertmanager", args.rate, args.seconds)
        queued = relay.metric("alert_relay_accepted_total", 'kind="alert"')
    finally:
        relay.stop()
        slack.close()
        faxplus.close()
        bare.shutdown()
        workdir.cleanup()

    print(f"offered {args.rate:g} notifications/s for {args.seconds:g} s from {CONNECTIONS} keep-alive connections")
    print(f"{'':22}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for name, result in (("bare HTTP (reference)", reference), ("alert-relay", measured)):
        print(f"{name:22}{result['rate']:9.1f}{result['p50'] * 1e3:9.2f}{result['p99'] * 1e3:9.2f}"
              f"{result['max'] * 1e3:9.2f}{result['errors']:8d}")
    print(f"relay/reference: rate {measured['rate'] / reference['rate']:.3f}, p99 {measured['p99'] / reference['p99']:.2f}x")
    print(f"relay queued {queued:g} of {measured['sent']} (target: all); "
          f"p99 {measured['p99'] * 1e3:.2f} ms (target < 20 ms): {'OK' if measured['p99'] < 0.020 and not measured['errors'] else 'MISSED'}")


if __name__ == "__main__":
    main()
