#!/usr/bin/env python3
"""Does the socket tuning fix what it claims? Bursts through nginx on master-node to a unix socket.

A burst of BURST concurrent HTTP requests from this machine goes to nginx on master-node, which
proxies each to a unix-socket upstream (bench/unix_upstream.py: Grafana-like, its accept queue is
net.core.somaxconn, each request takes WORK_MS). For each condition the tuning and nginx roles are
deployed on master-node with that condition's tuning file, the upstream restarted (it reads
somaxconn at start, as Go does), then one burst. Per condition it prints the requests answered 200,
502 and not at all, and the upstream connect errors in nginx's error log: EAGAIN ("11: Resource
temporarily unavailable", the accept queue was full) and "worker_connections are not enough".

Conditions, in order (the lab ends on inventory/tuning.yaml, as deployed):
  debian-defaults     bench/debian-defaults.tuning.yaml (Debian 13's own values)
  default-somaxconn   inventory/tuning.yaml with net.core.somaxconn at the kernel default
  tuning              inventory/tuning.yaml

Only per-network-namespace sysctls take effect in a lab node; kernel-global ones (fs.*, vm.*,
net.core.netdev_max_backlog) are persisted but not applied there, and are listed as such.

Run as root from the repo root with the lab up and deployed (./dev deploy):
    .venv/bin/python bench/nginx_burst.py [--burst N] [--work-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from homelab.lab.inventory import inventory_groups, read_nodes  # noqa: E402
from homelab.lab.settings import lab_settings  # noqa: E402
from homelab.lab.ssh import ssh_command  # noqa: E402
from roles.firewall import TABLE as FIREWALL_TABLE  # noqa: E402
from roles.tuning.settings import Tuning, load_tuning  # noqa: E402

BIN = Path(sys.executable).parent
INVENTORY = REPO / "inventory" / "lab.py"
TUNING_FILE = REPO / "inventory" / "tuning.yaml"
DEFAULTS_FILE = REPO / "bench" / "debian-defaults.tuning.yaml"
# The inventory's nginx host (master-node).
NODE = min(name for name, (_data, groups) in inventory_groups(INVENTORY).items() if "nginx" in groups)
SOCKET = "/run/homelab-burst/upstream.sock"
UPSTREAM_UNIT = "homelab-burst-upstream"
SITE = "/etc/nginx/sites-enabled/homelab-burst.conf"
PORT = 8099
FIREWALL_COMMENT = "homelab_burst_bench"
ERROR_LOG = "/var/log/nginx/error.log"
EAGAIN = "(11: Resource temporarily unavailable) while connecting to upstream"
NO_CONNECTIONS = "worker_connections are not enough"
# Chosen so that the peak accept queue (about BURST) is above the kernel's default somaxconn (4096)
# and below the tuned one; at WORK_MS per request the upstream drains about 200 requests/s.
DEFAULT_BURST = 6000
DEFAULT_WORK_MS = 5.0
# Generous: the measure is connect errors, not slowness (the last of a burst waits ~BURST*WORK_MS).
CLIENT_TIMEOUT_S = 300


@dataclass
class Outcome:
    condition: str
    somaxconn: int
    upstream_backlog: int
    worker_connections: int
    ok: int
    bad_gateway: int
    other_status: int
    no_response: int
    eagain: int
    no_worker_connections: int
    # TCP connections the node's kernel dropped because nginx's accept queue was full.
    listen_overflows: int
    # Why requests got no response, by kind, most frequent first.
    no_response_kinds: list[tuple[str, int]]
    # Other error-log messages by kind (numbers masked), most frequent first.
    other_errors: list[tuple[str, int]] = field(default_factory=list)

    @property
    def connect_errors(self) -> int:
        return self.bad_gateway + self.eagain


def on_node(command: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(ssh_command(lab_settings(), NODE, command), input=stdin, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        sys.exit(f"bench: on {NODE}: {command!r} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def node_address() -> str:
    return next(node.address for node in read_nodes(INVENTORY) if node.name == NODE)


def deploy(tuning_file: Path) -> None:
    result = subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(INVENTORY), "deploys/all.py", "--limit", NODE,
         "--data", "only_roles=tuning,nginx", "--data", f"tuning_file={tuning_file}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        sys.exit(f"bench: deploying {tuning_file} failed:\n{result.stderr[-3000:]}{result.stdout[-3000:]}")


def kernel_global_keys(tuning: Tuning) -> list[str]:
    """Tuning sysctls a lab node cannot set: /proc/sys is read-only for them in a container."""
    script = "; ".join(f"[ -w /proc/sys/{key.replace('.', '/')} ] || echo {key}" for key in tuning.sysctl)
    return on_node(script + "; true").split()


def site(tuning: Tuning) -> str:
    return (
        "# Managed by bench/nginx_burst.py while it runs; removed afterwards.\n"
        f"server {{\n    listen {PORT} backlog={tuning.nginx.listen_backlog};\n"
        f"    access_log off;\n    proxy_read_timeout {CLIENT_TIMEOUT_S}s;\n    proxy_send_timeout {CLIENT_TIMEOUT_S}s;\n"
        f"    location / {{ proxy_pass http://unix:{SOCKET}:/; }}\n}}\n"
    )


def prepare(tuning: Tuning, work_ms: float) -> int:
    """Start the upstream and the burst site under the deployed tuning; returns the upstream's backlog."""
    on_node(f"systemctl stop {UPSTREAM_UNIT} 2>/dev/null; mkdir -p {Path(SOCKET).parent} && "
            f"cat > {Path(SOCKET).parent}/unix_upstream.py", stdin=(REPO / "bench" / "unix_upstream.py").read_text(),
            check=False)
    on_node(f"systemd-run --quiet --collect --unit {UPSTREAM_UNIT} "
            f"python3 {Path(SOCKET).parent}/unix_upstream.py {SOCKET} {work_ms}")
    on_node(f"for i in $(seq 50); do [ -S {SOCKET} ] && break; sleep 0.1; done; [ -S {SOCKET} ]")
    on_node(f"cat > {SITE} && nginx -t -q && systemctl reload nginx && sleep 2", stdin=site(tuning))
    open_port()
    # For a listening socket, ss shows its accept queue's size in Send-Q.
    return int(on_node(f"ss -Hxl src {SOCKET}").split()[3])


def open_port() -> None:
    """The burst site is no service of the topology, so the node firewall (roles/firewall) drops its
    port: let the control machine in while the bench runs."""
    on_node(f"! nft list table inet {FIREWALL_TABLE} >/dev/null 2>&1 || "
            f"nft insert rule inet {FIREWALL_TABLE} input tcp dport {PORT} accept comment {FIREWALL_COMMENT}")


def close_port() -> None:
    # `nft -a` ends each rule's line with "# handle N".
    on_node(f"for handle in $(nft -a list chain inet {FIREWALL_TABLE} input 2>/dev/null "
            f"| grep {FIREWALL_COMMENT} | awk '{{print $NF}}'); do "
            f"nft delete rule inet {FIREWALL_TABLE} input handle $handle; done; true", check=False)


def cleanup() -> None:
    close_port()
    on_node(f"rm -f {SITE}; nginx -t -q && systemctl reload nginx; systemctl stop {UPSTREAM_UNIT} 2>/dev/null; "
            f"rm -rf {Path(SOCKET).parent}; true", check=False)


def failure(stage: str, exc: BaseException) -> str:
    return f"none: {stage}: {type(exc).__name__} {getattr(exc, 'strerror', '') or ''}".rstrip()


async def one_request(address: str) -> str:
    """The response's status code, or "none: <stage>: <why>" when no response came."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, PORT), CLIENT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as exc:
        return failure("connect", exc)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: burst\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT_S)
        fields = line.split()
        return fields[1].decode() if len(fields) > 1 else "none: response: connection closed"
    except (OSError, asyncio.TimeoutError) as exc:
        return failure("response", exc)
    finally:
        writer.close()


async def burst(address: str, size: int) -> list[str]:
    return await asyncio.gather(*(one_request(address) for _ in range(size)))


def error_kinds(log: str) -> Counter:
    """nginx error-log lines by message, with pids, connection numbers and counts masked."""
    kinds = Counter()
    for line in log.splitlines():
        match = re.search(r"\[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$", line)
        if match:
            kinds[f"[{match.group(1)}] " + re.sub(r"\d+", "N", match.group(2))[:90]] += 1
    return kinds


def listen_overflows() -> int:
    """TcpExtListenOverflows of the node's network namespace (/proc/net/netstat: names line, values line)."""
    lines = [line.split() for line in on_node("grep '^TcpExt:' /proc/net/netstat").splitlines()]
    return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])


def run_condition(name: str, tuning_file: Path, burst_size: int, work_ms: float) -> Outcome:
    tuning = load_tuning(tuning_file)
    deploy(tuning_file)
    backlog = prepare(tuning, work_ms)
    log_size = int(on_node(f"stat -c %s {ERROR_LOG}"))
    overflows_before = listen_overflows()
    statuses = asyncio.run(burst(node_address(), burst_size))
    overflows = listen_overflows() - overflows_before
    new_errors = on_node(f"tail -c +{log_size + 1} {ERROR_LOG}")
    cleanup()
    return Outcome(
        condition=name,
        somaxconn=int(on_node("cat /proc/sys/net/core/somaxconn")),
        upstream_backlog=backlog,
        worker_connections=tuning.nginx.worker_connections,
        ok=statuses.count("200"),
        bad_gateway=statuses.count("502"),
        other_status=sum(1 for s in statuses if s not in ("200", "502") and not s.startswith("none")),
        no_response=sum(1 for s in statuses if s.startswith("none")),
        no_response_kinds=Counter(s for s in statuses if s.startswith("none")).most_common(3),
        eagain=new_errors.count(EAGAIN),
        no_worker_connections=new_errors.count(NO_CONNECTIONS),
        listen_overflows=overflows,
        other_errors=[(kind, count) for kind, count in error_kinds(new_errors).most_common()
                      if "Resource temporarily unavail" not in kind and NO_CONNECTIONS not in kind][:3],
    )


def conditions(scratch: Path) -> list[tuple[str, Path]]:
    defaults = load_tuning(DEFAULTS_FILE)
    data = yaml.safe_load(TUNING_FILE.read_text())
    data["sysctl"]["net.core.somaxconn"] = defaults.sysctl["net.core.somaxconn"]
    data["nginx"]["listen_backlog"] = min(data["nginx"]["listen_backlog"], defaults.sysctl["net.core.somaxconn"])
    default_somaxconn = scratch / "default-somaxconn.tuning.yaml"
    default_somaxconn.write_text(yaml.safe_dump(data))
    return [("debian-defaults", DEFAULTS_FILE), ("default-somaxconn", default_somaxconn), ("tuning", TUNING_FILE)]


def measure(burst_size: int, work_ms: float) -> list[Outcome]:
    # One socket per request on this side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < burst_size + 100:
        sys.exit(f"bench: open-file limit {hard} is below the burst ({burst_size}); raise ulimit -n")
    with tempfile.TemporaryDirectory(prefix="homelab-burst-") as scratch:
        try:
            return [run_condition(name, path, burst_size, work_ms) for name, path in conditions(Path(scratch))]
        finally:
            cleanup()
            deploy(TUNING_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=DEFAULT_BURST, help="concurrent requests per burst")
    parser.add_argument("--work-ms", type=float, default=DEFAULT_WORK_MS, help="upstream time per request")
    args = parser.parse_args()
    outcomes = measure(args.burst, args.work_ms)
    print(f"burst of {args.burst} concurrent requests, upstream {args.work_ms} ms per request")
    header = ("condition", "somaxconn", "upstream q", "worker_conn", "200", "502", "other", "no answer",
              "EAGAIN", "no worker_conn", "listen overflow")
    print("".join(f"{h:>16}" for h in header))
    for o in outcomes:
        row = (o.condition, o.somaxconn, o.upstream_backlog, o.worker_connections, o.ok, o.bad_gateway,
               o.other_status, o.no_response, o.eagain, o.no_worker_connections, o.listen_overflows)
        print("".join(f"{v:>16}" for v in row))
    for o in outcomes:
        for kind, count in o.no_response_kinds + o.other_errors:
            print(f"  {o.condition}: {count} x {kind}")
    print("kernel-global in a lab node (persisted, not applied, not measured): "
          + (", ".join(kernel_global_keys(load_tuning(TUNING_FILE))) or "none"))


if __name__ == "__main__":
    main()
