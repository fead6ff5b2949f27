"""The lab's shared plumbing on the host: the bridge, the apt proxy and the inotify limit.

Nodes get no route to the outside. Their only way out is apt-cacher-ng bound to the bridge
address, which forwards to the Debian mirror the host uses: nodes can install Debian packages and
nothing else, and repeated installs across nodes are served from its cache.

Every step checks the current state first, so leftovers of a crashed run are reused or replaced.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from homelab.lab.errors import LabError
from homelab.lab.image import host_mirror
from homelab.lab.settings import APT_PROXY_PORT, LabSettings

INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
# Each booted systemd takes several inotify instances; the default 128 runs out near 18 nodes.
INOTIFY_PER_NODE = 32


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def ensure_bridge(settings: LabSettings) -> None:
    bridge, address = settings.bridge, f"{settings.gateway}/{settings.prefix_length}"
    if run("ip", "link", "show", "dev", bridge).returncode != 0:
        result = run("ip", "link", "add", bridge, "type", "bridge")
        if result.returncode != 0:
            raise LabError(f"cannot create bridge {bridge}: {result.stderr.strip()}")
    shown = run("ip", "-o", "-4", "addr", "show", "dev", bridge).stdout
    if address not in shown.split():
        run("ip", "addr", "flush", "dev", bridge)
        result = run("ip", "addr", "add", address, "dev", bridge)
        if result.returncode != 0:
            raise LabError(f"cannot give bridge {bridge} address {address}: {result.stderr.strip()}")
    run("ip", "link", "set", bridge, "up")


def remove_bridge(settings: LabSettings) -> None:
    if run("ip", "link", "show", "dev", settings.bridge).returncode == 0:
        run("ip", "link", "del", settings.bridge)


def _proxy_dir(settings: LabSettings) -> Path:
    return settings.state_dir / "apt-proxy"


def _proxy_pid(settings: LabSettings) -> int | None:
    try:
        pid = int((_proxy_dir(settings) / "pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    return pid if b"apt-cacher-ng" in cmdline else None


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_apt_proxy(settings: LabSettings) -> None:
    """apt-cacher-ng on the bridge address, started by us (no systemd on this host to do it)."""
    gateway = str(settings.gateway)
    if _proxy_pid(settings) and _listening(gateway, APT_PROXY_PORT):
        return
    stop_apt_proxy(settings)
    if not shutil.which("apt-cacher-ng"):
        raise LabError("apt-cacher-ng not found: apt-get install apt-cacher-ng (./dev setup does it)")
    base = _proxy_dir(settings)
    conf, cache = base / "conf", settings.cache_dir / "apt-cacher-ng"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree("/etc/apt-cacher-ng", conf)
    # Its stock Debian backend (ftp.debian.org) may be unreachable; use the host's own mirror.
    (conf / "backends_debian").write_text(host_mirror() + "/\n")
    for folder in (base / "log", cache):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "apt-cacher-ng", "apt-cacher-ng")
    shutil.chown(base, "apt-cacher-ng", "apt-cacher-ng")
    with open(base / "stdout.log", "ab") as output:
        process = subprocess.Popen(
            ["apt-cacher-ng", "-c", str(conf), "ForeGround=1", f"BindAddress={gateway}",
             f"Port={APT_PROXY_PORT}", f"CacheDir={cache}", f"LogDir={base / 'log'}",
             f"PidFile={base / 'acng.pid'}", f"SocketPath={base / 'socket'}", "ExThreshold=4",
             # Only the Debian archives it knows (the remapped backends): anything else is refused
             # at once instead of timing out on a name nodes cannot resolve.
             "ForceManaged=1"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    (base / "pid").write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while not _listening(gateway, APT_PROXY_PORT):
        if process.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"apt-cacher-ng did not start on {gateway}:{APT_PROXY_PORT}; see {base}/stdout.log")
        time.sleep(0.1)


def stop_apt_proxy(settings: LabSettings) -> None:
    pid = _proxy_pid(settings)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    (_proxy_dir(settings) / "pid").unlink(missing_ok=True)


def raise_inotify_limit(settings: LabSettings, node_count: int) -> None:
    """Raise fs.inotify.max_user_instances for many nodes, remembering the value to restore."""
    saved = settings.state_dir / "inotify.max_user_instances"
    current = int(INOTIFY_INSTANCES.read_text())
    wanted = 128 + INOTIFY_PER_NODE * node_count
    if current >= wanted:
        return
    if not saved.exists():
        saved.write_text(str(current))
    INOTIFY_INSTANCES.write_text(str(wanted))


def restore_inotify_limit(settings: LabSettings) -> None:
    saved = settings.state_dir / "inotify.max_user_instances"
    if saved.exists():
        INOTIFY_INSTANCES.write_text(saved.read_text().strip())
        saved.unlink()
