"""`homelab profile NODE SERVICE`: where a running toy-redis or alert relay spends its CPU time, and
(`--memory`) where its memory goes.

py-spy (installed in the service's venv on the node with its other wheels, roles/python_app.py)
attaches from outside as root over SSH, so the service's unit keeps its hardening and nothing runs
inside it. It records one speedscope file (every sample's stack, with file and line); the control
machine keeps that file for speedscope.app, draws a flame graph SVG from the same samples, and prints
the functions that were on top of the stack most often.

With `--memory`, the control machine asks the service itself for its allocation view
(pprof_sampler.allocations): toy-redis over its RESP port with the vault's password (TLS when the
access helper says so): TRACEMALLOC START for the seconds asked, REPORT at the end, STOP; the relay
with one GET /debug/allocations?seconds=N behind its metrics login, which traces for those seconds
and stops. The top allocating lines by growth and by size are printed and written as JSON.
"""

from __future__ import annotations

import gzip
import json
import shlex
import subprocess
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from homelab.config import ConfigError
from homelab.maintenance import CommandError
from pprof_sampler.encode import cpu_profile
from homelab.ssh import ssh_argv
from homelab.topology import Topology
from pprof_sampler.allocations import PATH as ALLOCATIONS_PATH
from pprof_sampler.allocations import Site

# The services `homelab profile` knows: topology role -> the role's PythonApp (venv, unit).
PROFILED_ROLES = ("toy_redis", "alert_relay")
FORMATS = ("svg", "speedscope", "pprof")
DEFAULT_FORMATS = ("svg", "speedscope")
# py-spy's own limits would accept more; beyond these a profile costs the service too much.
MAX_SECONDS = 600
MAX_RATE = 1000
# SSH setup and py-spy's attach on top of the recording itself.
SSH_MARGIN_S = 30
SUMMARY_FUNCTIONS = 5


@dataclass(frozen=True)
class Frame:
    name: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.name} ({Path(self.file).name}:{self.line})"


# A stack is root first, leaf last; its value is the time it was seen for, in seconds.
Stacks = Counter


def from_speedscope(document: dict) -> Stacks:
    """Every sampled stack of every thread in a speedscope file (py-spy writes "sampled" profiles)."""
    frames = [Frame(frame["name"], frame.get("file") or "?", frame.get("line") or 0)
              for frame in document["shared"]["frames"]]
    stacks: Stacks = Counter()
    for profile in document["profiles"]:
        if profile.get("type") != "sampled":
            raise ValueError(f"expected sampled profiles, got {profile.get('type')!r}")
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            stacks[tuple(frames[index] for index in sample)] += weight
    return stacks


def self_times(stacks: Stacks) -> Counter:
    """Time each function was on top of the stack (running itself, not a callee)."""
    times: Counter = Counter()
    for stack, seconds in stacks.items():
        if stack:
            times[stack[-1]] += seconds
    return times


def summary(stacks: Stacks, count: int = SUMMARY_FUNCTIONS) -> str:
    """One line: the functions most often on top of the stack, with their share of all samples."""
    total = sum(stacks.values())
    if not total:
        return "no samples (the service was idle; --idle counts idle threads too)"
    top = self_times(stacks).most_common(count)
    return "top: " + ", ".join(f"{frame} {seconds / total:.0%}" for frame, seconds in top)


@dataclass
class _Node:
    seconds: float = 0.0
    children: dict | None = None


def _tree(stacks: Stacks) -> _Node:
    root = _Node(children={})
    for stack, seconds in stacks.items():
        root.seconds += seconds
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(children={}))
            node.seconds += seconds
    return root


ROW_PX = 16
WIDTH_PX = 1200
# Narrower boxes are left out, as flamegraph.pl does: they cannot be read.
MIN_BOX_PX = 0.5


def _depth(node: _Node, minimum_seconds: float) -> int:
    return 1 + max((_depth(child, minimum_seconds) for child in node.children.values()
                    if child.seconds >= minimum_seconds), default=0)


def flame_svg(stacks: Stacks, title: str) -> str:
    """A flame graph (root at the bottom, widths proportional to time), each box titled with its
    function, file, line and share; names are escaped, since they come from the profiled process."""
    root = _tree(stacks)
    total = root.seconds or 1.0
    minimum_seconds = MIN_BOX_PX / WIDTH_PX * total
    height = (_depth(root, minimum_seconds) + 1) * ROW_PX
    boxes: list[str] = []

    def draw(node: _Node, x: float, y: int) -> None:
        for frame, child in sorted(node.children.items(), key=lambda item: str(item[0])):
            width = child.seconds / total * WIDTH_PX
            if child.seconds >= minimum_seconds:
                label = escape(f"{frame} {child.seconds / total:.1%}")
                hue = 20 + zlib.crc32(frame.name.encode()) % 40
                text = (f'<text x="{x + 2:.1f}" y="{y + ROW_PX - 4}">{escape(frame.name[: int(width / 7)])}</text>'
                        if width > 30 else "")
                boxes.append(f'<g><title>{label}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
                             f'height="{ROW_PX - 1}" fill="hsl({hue},90%,60%)"/>{text}</g>')
                draw(child, x, y - ROW_PX)
            x += width

    draw(root, 0.0, height - ROW_PX)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
            f'font-family="monospace" font-size="11">\n<title>{escape(title)}</title>\n'
            + "\n".join(boxes) + "\n</svg>\n")


@dataclass(frozen=True)
class Request:
    node: str
    role: str
    seconds: int = 30
    rate: int = 100
    native: bool = False
    idle: bool = False


def py_spy_options(request: Request) -> list[str]:
    """`py-spy record`'s options for ``request`` (besides --pid and --output), also what the bench runs.

    --nonblocking: py-spy reads the stacks without stopping the service for each sample, so the
    service never waits on it and, on a node with a core to spare, py-spy's own CPU is not taken
    from the service's core (bench/profile_bench.py; the hot function still tops the profile,
    tests/hosts/test_profiling.py). py-spy refuses it with --native: unwinding C frames needs the
    threads stopped."""
    options = ["--duration", str(request.seconds), "--rate", str(request.rate), "--format", "speedscope"]
    options += ["--native"] if request.native else ["--nonblocking"]
    return options + (["--idle"] if request.idle else [])


def py_spy_script(app, request: Request) -> str:
    """Shell run as root on the node: find the unit's main process, record, print the speedscope file.
    A missing unit, process or py-spy is one line on stderr and exit status 3."""
    py_spy = app.binary("py-spy")
    return "; ".join([
        "set -e",
        f"pid=$(systemctl show --property MainPID --value {app.service})",
        f"[ \"${{pid:-0}}\" != 0 ] || {{ echo '{app.service} is not running on this node' >&2; exit 3; }}",
        # With runtime container the unit's main process is the docker client, and no venv is on the node.
        f"case \"$(readlink /proc/$pid/exe)\" in *python*) ;; *) echo \"{app.service}: its main process is "
        f"$(readlink /proc/$pid/exe), not Python (a service run as a container is not profiled yet)\" >&2; exit 3;; esac",
        f"test -x {py_spy} || {{ echo '{app.service}: {py_spy} is missing (deploy the node again: py-spy comes "
        f"with the service wheels)' >&2; exit 3; }}",
        "out=$(mktemp --suffix .json)",
        "trap 'rm -f \"$out\"' EXIT",
        f"{py_spy} record --pid \"$pid\" --output \"$out\" {shlex.join(py_spy_options(request))} >&2",
        "cat \"$out\"",
    ])


def record(topology: Topology, request: Request) -> dict:
    """The speedscope document py-spy recorded on the node."""
    from roles.alert_relay import APP as relay
    from roles.toy_redis import APP as toy_redis

    app = {"toy_redis": toy_redis, "alert_relay": relay}[request.role]
    argv = ssh_argv(topology, request.node, py_spy_script(app, request))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=request.seconds + SSH_MARGIN_S)
    except subprocess.TimeoutExpired:
        raise CommandError(f"{request.node}: py-spy did not finish within {request.seconds + SSH_MARGIN_S} s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("py-spy> ")]
        raise CommandError(f"{request.node}: {lines[-1] if lines else f'ssh exited with {result.returncode}'}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CommandError(f"{request.node}: py-spy's output is not a speedscope file") from None


def check(topology: Topology, request: Request) -> None:
    if request.role not in PROFILED_ROLES:
        raise ConfigError("SERVICE", "", f"expected one of {', '.join(PROFILED_ROLES)}, got {request.role!r}")
    if request.node not in topology.hosts:
        raise ConfigError("NODE", "", f"expected a host of the inventory ({', '.join(topology.hosts)}), "
                                      f"got {request.node!r}")
    if not topology.runs(request.node, request.role):
        raise ConfigError("NODE", "", f"{request.node} does not run {request.role} "
                                      f"(it runs on {', '.join(topology.hosts_of(request.role)) or 'no host'})")
    if not 1 <= request.seconds <= MAX_SECONDS:
        raise ConfigError("--seconds", "", f"expected 1..{MAX_SECONDS}, got {request.seconds}")
    if not 1 <= request.rate <= MAX_RATE:
        raise ConfigError("--rate", "", f"expected 1..{MAX_RATE} samples per second, got {request.rate}")


def write(stacks_document: dict, request: Request, formats: list[str], output_dir: Path,
          started_ns: int | None = None) -> list[Path]:
    """The files asked for, named after node, service and time (pprof's .pb.gz is gzipped, as pprof writes it)."""
    started_ns = time.time_ns() - request.seconds * 1_000_000_000 if started_ns is None else started_ns
    stem = f"{request.node}-{request.role}-{time.strftime('%Y%m%dT%H%M%S')}"
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for chosen in formats:
        if chosen == "speedscope":
            path = output_dir / f"{stem}.speedscope.json"
            path.write_text(json.dumps(stacks_document))
        elif chosen == "pprof":
            path = output_dir / f"{stem}.pb.gz"
            period_ns = 1_000_000_000 // request.rate
            path.write_bytes(gzip.compress(cpu_profile(from_speedscope(stacks_document), period_ns, started_ns,
                                                       request.seconds * 1_000_000_000)))
        else:
            path = output_dir / f"{stem}.svg"
            title = f"{request.role} on {request.node}, {request.seconds} s at {request.rate} Hz"
            path.write_text(flame_svg(from_speedscope(stacks_document), title))
        written.append(path)
    return written


def cpu(topology: Topology, request: Request, formats: list[str], output_dir: Path) -> tuple[list[Path], str]:
    """Record on the node, write the files; (paths written, summary line)."""
    check(topology, request)
    document = record(topology, request)
    return write(document, request, formats, output_dir), summary(from_speedscope(document))



# Toy-redis keeps tracing at most this much longer than asked, should the control machine go away.
MEMORY_GRACE_S = 30
MEMORY_SITES = 10


def _mib(size: int) -> str:
    return f"{size / 2**20:+.2f} MiB" if abs(size) >= 2**20 else f"{size / 1024:+.1f} KiB"


def memory_summary(sites: list[Site], count: int = SUMMARY_FUNCTIONS) -> str:
    """One line: the lines whose allocations grew most, then those holding most."""
    if not sites:
        return "no allocations traced"
    growth = sorted(sites, key=lambda site: site.growth, reverse=True)[:count]
    size = sorted(sites, key=lambda site: site.size, reverse=True)[:count]
    return ("growth: " + ", ".join(f"{site} {_mib(site.growth)}" for site in growth)
            + "; held: " + ", ".join(f"{site} {_mib(site.size).lstrip('+')}" for site in size))


def toy_redis_client(topology: Topology, node: str):
    """A redis-py client of toy-redis on ``node``, logged in with the vault's password."""
    from homelab.vault import load_vault
    from roles.toy_redis import PASSWORD_SECRET

    secrets = load_vault(topology.data(node, "vault_file"), topology.data(node, "vault_password_file"))
    return topology.access("toy_redis", node, "resp").redis(password=secrets.get(PASSWORD_SECRET), socket_timeout=10)


def allocations(client, seconds: int, sleep=time.sleep) -> list[Site]:
    """Trace a toy-redis's allocations (through a redis-py ``client``) for ``seconds``; the sites
    that grew or hold most. Tracing is stopped whatever happens; toy-redis stops it by itself too."""
    client.execute_command("TRACEMALLOC", "START", seconds + MEMORY_GRACE_S)
    try:
        sleep(seconds)
        rows = client.execute_command("TRACEMALLOC", "REPORT", MEMORY_SITES)
    finally:
        client.execute_command("TRACEMALLOC", "STOP")
    return [Site(file.decode(errors="replace"), line, size, growth, count) for file, line, size, growth, count in rows]


def relay_allocations(access, seconds: int) -> list[Site]:
    """Trace an alert relay's allocations for ``seconds`` through its GET /debug/allocations
    (``access``: homelab.access.Access of its listener, with the login); the relay stops by itself."""
    response = access.get(ALLOCATIONS_PATH, params={"seconds": seconds, "sites": MEMORY_SITES},
                          timeout=seconds + SSH_MARGIN_S)
    if response.status_code != 200:
        raise CommandError(f"{access.endpoint.host}: alert-relay answered {response.status_code}: "
                           f"{response.text.strip()[:200]}")
    return [Site(**site) for site in response.json()["sites"]]


def _toy_redis_sites(topology: Topology, request: Request) -> list[Site]:
    import redis

    client = toy_redis_client(topology, request.node)
    try:
        return allocations(client, request.seconds)
    except redis.RedisError as exc:
        raise CommandError(f"{request.node}: toy-redis: {exc}") from None
    finally:
        client.close()


def _relay_sites(topology: Topology, request: Request) -> list[Site]:
    import requests

    access = topology.access("alert_relay", request.node)
    if access.auth is None:
        raise ConfigError("NODE", "", f"--memory: {request.node}'s alert relay serves its allocation view only "
                                      f"behind its login (pki.tls on for {request.node})")
    try:
        return relay_allocations(access, request.seconds)
    except requests.RequestException as exc:
        raise CommandError(f"{request.node}: alert-relay: {exc}") from None


def memory(topology: Topology, request: Request, output_dir: Path) -> tuple[list[Path], str]:
    check(topology, request)
    sites = (_toy_redis_sites if request.role == "toy_redis" else _relay_sites)(topology, request)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{request.node}-{request.role}-{time.strftime('%Y%m%dT%H%M%S')}.allocations.json"
    path.write_text(json.dumps([site.__dict__ for site in sites], indent=1))
    return [path], memory_summary(sites)
