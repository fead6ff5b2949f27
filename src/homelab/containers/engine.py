"""A private Docker engine (dockerd) for tests, CI and benches on the control machine.

The control machine has Debian's docker.io but runs no daemon, and the lab's NAT lives in the
host's nft ruleset, so this dockerd is started with the settings measured to leave the host's
firewall and forwarding alone: no iptables rules, no IP forwarding, no docker0 bridge (containers
use host or no networking). It gets its own data-root, exec-root and socket, so several can run
side by side (one per test session) and stopping one removes everything it made.

A run cut short by SIGKILL (a CI timeout, a killed bench) cannot stop its engine: the kernel stops
dockerd (PR_SET_PDEATHSIG), but its data-root and exec-root (with the network namespace handle
dockerd leaves mounted there) stay. The next private engine removes such roots when no running
process names them (_remove_stale_roots).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from homelab.config import ConfigError

# dockerd's socket and containerd's live under exec-root: a unix socket path must stay under 108
# bytes, so the exec-root gets a short name in /run rather than one below the data-root.
EXEC_ROOT_PARENT = Path("/run")
EXEC_ROOT_PREFIX = "hd-"
# Where a data-root is made when the caller names none.
DATA_ROOT_PARENT = Path("/var/tmp")
DATA_ROOT_PREFIX = "homelab-docker-"
# Held while an engine's roots are made and its dockerd started, and while stale roots are looked
# for: a root no process names is then one whose engine is gone, never one about to start.
ROOTS_LOCK = EXEC_ROOT_PARENT / "homelab-docker.lock"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
DOCKERD_FLAGS = ["--iptables=false", "--ip-forward=false", "--bridge=none"]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Engine:
    """A running private dockerd: its docker SDK client and the DOCKER_HOST that reaches it."""

    docker_host: str
    client: docker.DockerClient
    data_root: Path
    log_file: Path


def dockerd_command(data_root: Path, exec_root: Path) -> list[str]:
    return [
        "dockerd", *DOCKERD_FLAGS,
        "--data-root", str(data_root),
        "--exec-root", str(exec_root),
        "-H", f"unix://{exec_root}/docker.sock",
        "--pidfile", str(exec_root / "docker.pid"),
    ]


def unavailable_reason() -> str | None:
    """Why a private dockerd cannot start here, or None."""
    if os.geteuid() != 0:
        return "a private dockerd needs root (run the tests as root, as ./dev test does)"
    if not shutil.which("dockerd"):
        return "dockerd is missing: apt-get install docker.io (./dev setup does it)"
    return None


@contextlib.contextmanager
def private_engine(data_root: Path | None = None) -> Iterator[Engine]:
    """Start a dockerd of our own, yield it once it answers, and stop it (and its containers) after.

    ``data_root`` keeps images and build cache between runs (benches measure warm builds with
    it); by default a temporary one is used and removed.
    """
    reason = unavailable_reason()
    if reason:
        raise ConfigError("dockerd", "", reason)
    with contextlib.ExitStack() as cleanup:
        with _roots_lock():
            _remove_stale_roots()
            if data_root is None:
                data_root = Path(tempfile.mkdtemp(prefix=DATA_ROOT_PREFIX, dir=DATA_ROOT_PARENT))
                cleanup.callback(_remove_root, data_root)
            data_root.mkdir(parents=True, exist_ok=True)
            exec_root = Path(tempfile.mkdtemp(prefix=EXEC_ROOT_PREFIX, dir=EXEC_ROOT_PARENT))
            cleanup.callback(_remove_root, exec_root)
            log_file = data_root / "dockerd.log"
            log = cleanup.enter_context(log_file.open("wb"))
            # Popen returns once dockerd is exec'd: from then on its command line names both roots.
            process = subprocess.Popen(dockerd_command(data_root, exec_root), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=_stop_with(os.getpid()))
            cleanup.callback(_stop, process)
        docker_host = f"unix://{exec_root}/docker.sock"
        client = _wait_until_answering(process, docker_host, log_file)
        cleanup.callback(client.close)
        yield Engine(docker_host=docker_host, client=client, data_root=data_root, log_file=log_file)


def _stop_with(owner: int):
    """A preexec_fn: the kernel sends dockerd SIGTERM when the thread that started it ends.

    dockerd runs in a session of its own (a Ctrl-C meant for pytest must not reach it before
    the fixture stops it), so nothing else would stop it if its owner were killed: a test run or
    bench cut short (SIGKILL, a CI timeout) would leave the daemon, its containerd and its
    containers running on a shared machine. SIGTERM makes dockerd stop its containers and exit.
    (The kernel watches the starting thread, not the process: start engines from a thread that
    outlives them, as pytest fixtures and the benches do.)
    """
    def before_exec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != owner:  # the owner died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return before_exec


def _wait_until_answering(process: subprocess.Popen, docker_host: str, log_file: Path) -> docker.DockerClient:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ConfigError("dockerd", "", f"exited with status {process.returncode} at start: {tail[0]}")
        try:
            # The client asks the daemon for its API version as it is made.
            return docker.DockerClient(base_url=docker_host, timeout=600)
        except docker.errors.DockerException:
            if time.monotonic() > deadline:
                raise ConfigError("dockerd", "", f"did not answer on {docker_host} within {START_TIMEOUT_S} s "
                                                 f"(see {log_file})") from None
            time.sleep(0.2)


@contextlib.contextmanager
def _roots_lock() -> Iterator[None]:
    with open(ROOTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


# The names tempfile.mkdtemp gives our roots: a prefix and 8 of its characters. A data-root a caller
# named (kept between runs) has another name and is never taken for a stale one.
def _temporary_name(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + r"[a-z0-9_]{8}")


def _remove_stale_roots() -> list[Path]:
    """With ROOTS_LOCK held: remove every data-root and exec-root of ours that no running process
    names (dockerd names both on its command line; containerd and its shims the exec-root)."""
    command_lines = _command_lines()
    stale = [root for parent, prefix in ((DATA_ROOT_PARENT, DATA_ROOT_PREFIX), (EXEC_ROOT_PARENT, EXEC_ROOT_PREFIX))
             for root in parent.glob(f"{prefix}*")
             if _temporary_name(prefix).fullmatch(root.name) and root.is_dir() and not root.is_symlink()
             and not any(_names(command_line, root) for command_line in command_lines)]
    for root in stale:
        _remove_root(root)
    return stale


def _command_lines() -> list[bytes]:
    """Every running process's arguments, NUL-terminated (as /proc/PID/cmdline has them)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(cmdline.read_bytes())
        except OSError:  # ended meanwhile
            continue
    return found


def _names(command_line: bytes, root: Path) -> bool:
    """Whether an argument is ``root`` or a path below it (also as `--data-root=ROOT`, `unix://ROOT/...`)."""
    path = os.fsencode(root)
    return path + b"\0" in command_line or path + b"/" in command_line


def _remove_root(root: Path) -> None:
    """Unmount what is mounted below ``root`` (dockerd leaves its network namespace handle,
    netns/default, mounted in its exec-root when it exits), then remove it."""
    with open("/proc/self/mounts") as mounts:
        below = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for mount_point in sorted(below, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM: dockerd stops its containers and its containerd, then exits."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
