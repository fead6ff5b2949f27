"""Another client's view of a server: PINGs every millisecond for a while and reports the worst
round trip. It runs in a process of its own, so the caller's work cannot delay its pings; used by
tests/toy_redis/test_hostile.py and bench/toy_redis_hostile.py.

    pinger = Pinger(port, seconds=3)     # returns once the pinger is connected
    ...                                  # the request under test
    pinger.result()                      # {"worst": seconds, "count": pings}
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time


def ping_for(port: int, seconds: float) -> None:
    """The pinger process: "ready" once connected, then one JSON line with the worst round trip."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("ready", flush=True)
    worst, count, end = 0.0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        sock.sendall(b"PING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(64)
        worst = max(worst, time.perf_counter() - start)
        count += 1
        time.sleep(0.001)
    print(json.dumps({"worst": worst, "count": count}), flush=True)


def prioritize(pid: int, niceness: int) -> None:
    """Run ``pid`` at ``niceness`` when allowed (root); on a shared machine it then waits less for the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except PermissionError:
        pass


class Pinger:
    def __init__(self, port: int, seconds: float, niceness: int | None = None):
        self.process = subprocess.Popen([sys.executable, __file__, str(port), str(seconds)],
                                        stdout=subprocess.PIPE, text=True)
        if niceness is not None:
            prioritize(self.process.pid, niceness)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the pinger could not connect to port {port}")

    def result(self, timeout: float = 600) -> dict:
        out, _ = self.process.communicate(timeout=timeout)
        return json.loads(out)


if __name__ == "__main__":
    ping_for(int(sys.argv[1]), float(sys.argv[2]))
