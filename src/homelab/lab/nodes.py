"""One lab node: an overlay on the base image, booted by systemd-nspawn in its own cgroup.

The overlay's upper layer holds everything that makes the node itself (hostname, machine-id, host
key, address, mirror address, root's authorized key) and whatever deploys install later. Each node gets
its own cgroup before nspawn starts; without that, nodes share one and stopping one can kill
another's services (measured, see ../shared/notes/lab.md).

A node whose runtime is `container` (homelab.lab.inventory) can run Docker's containers (measured,
docs/containers.md): nspawn lets it make session keyrings (runc joins one per container), and a
unit in the node makes the cgroup v1 controllers nspawn mounts read-only writable before Docker
starts. Only those nodes get it: writable controllers are the host's own hierarchies, so a node's
root could then change any cgroup on this machine. Other nodes keep nspawn's defaults.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from homelab.lab.errors import LabError
from homelab.lab.inventory import LabNode
from homelab.lab.settings import LabSettings

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "homelab-lab"
STOP_TIMEOUT_S = 15
NODE_NOFILE_HARD = 524288
# A node's /etc/resolv.conf: names it needs are in its /etc/hosts.
NO_NAME_SERVER = "# Lab nodes have no name server: the names they need are in /etc/hosts (homelab lab tool).\n"
# runc makes a session keyring for each container; nspawn's seccomp filter refuses these otherwise.
CONTAINER_SYSCALLS = "add_key keyctl request_key"
CGROUP_UNIT = "lab-cgroup-writable.service"
CGROUP_SCRIPT = "/usr/local/sbin/lab-cgroup-writable"
# A plain `remount,rw` fails with "mount point is busy"; a bind remount works (measured).
CGROUP_SCRIPT_TEXT = """#!/bin/sh
# Written by the homelab lab tool: this node runs Docker containers (its runtime is container).
# Makes the cgroup v1 controllers systemd-nspawn mounted read-only writable, for runc.
set -e
awk '$3 == "cgroup" && $4 ~ /^ro(,|$)/ { print $2 }' /proc/self/mounts | while read -r controller; do
    mount -o remount,bind,rw "$controller"
done
"""
CGROUP_UNIT_TEXT = f"""# Written by the homelab lab tool: this node runs Docker containers (its runtime is container).
[Unit]
Description=Lab: writable cgroup controllers for Docker
Before=containerd.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={CGROUP_SCRIPT}

[Install]
WantedBy=multi-user.target
"""
# A node that reboots (`systemctl reboot`, pyinfra's server.reboot) makes nspawn exit with 133:
# boot it again, as systemd-nspawn@.service does on a real host (RestartForceExitStatus=133).
BOOT_AGAIN_ON_REBOOT = 'while "$@"; [ $? -eq 133 ]; do :; done'
BOOT_LOOP_NAME = "lab-node"  # the loop's $0


def node_dir(settings: LabSettings, name: str) -> Path:
    return settings.state_dir / "nodes" / name


def cgroup_parents() -> list[Path]:
    """The lab's cgroup in every hierarchy systemd inside a node needs (v2, or v1 named + unified)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT / CGROUP_PARENT]
    return [CGROUP_ROOT / hierarchy / CGROUP_PARENT
            for hierarchy in ("systemd", "unified") if (CGROUP_ROOT / hierarchy).is_dir()]


def cgroup_dirs(settings: LabSettings, name: str) -> list[Path]:
    """The node's own cgroup under each of the lab's, in a folder of its lab (named by its bridge,
    which no two labs share): labs may have nodes of the same name."""
    return [parent / settings.bridge / name for parent in cgroup_parents()]


def remove_cgroup_parents(settings: LabSettings) -> None:
    """Once every node of the lab is gone; a folder still holding another lab's or node's cgroup stays."""
    for parent in cgroup_parents():
        for folder in (parent / settings.bridge, parent):
            try:
                folder.rmdir()
            except OSError:
                pass


def kill_leftover_processes(settings: LabSettings, name: str) -> None:
    """SIGKILL whatever still runs in the node's cgroup: after nspawn itself was killed, the
    node's systemd and services live on, holding its address and answering ssh."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(pid) for top in cgroup_dirs(settings, name) if top.exists()
                for folder, _subdirs, _files in os.walk(top)
                for pid in (Path(folder) / "cgroup.procs").read_text().split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise LabError(f"processes of node {name} survive SIGKILL; see {cgroup_dirs(settings, name)[0]}/cgroup.procs")


def remove_cgroups(settings: LabSettings, name: str) -> None:
    for top in cgroup_dirs(settings, name):
        if not top.exists():
            continue
        # Children first: systemd inside the node made its own sub-cgroups.
        for folder, _subdirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(folder)
            except OSError:
                pass


def running_pid(settings: LabSettings, name: str) -> int | None:
    """The pid of the node's systemd-nspawn if it runs: the child of the process in the pid file
    (see start), or found by looking for it."""
    pid_file = node_dir(settings, name) / "pid"
    try:
        pid = int(pid_file.read_text())
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for candidate in [pid, *map(int, children)]:
            if _is_nspawn_for(candidate, settings, name):
                return candidate
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    # The pid file can be stale or gone (crash) while the node still runs.
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _is_nspawn_for(int(proc.name), settings, name):
            return int(proc.name)
    return None


def is_up(settings: LabSettings, name: str) -> bool:
    """Whether the node runs, or is between two boots: its nspawn not forked yet, or exited to
    reboot and about to start again (the boot loop start() left is alive)."""
    return running_pid(settings, name) is not None or _boot_loop_pid(settings, name) is not None


def _boot_loop_pid(settings: LabSettings, name: str) -> int | None:
    try:
        pid = int((node_dir(settings, name) / "pid").read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    ours = argv[:4] == [b"sh", b"-c", BOOT_AGAIN_ON_REBOOT.encode(), BOOT_LOOP_NAME.encode()]
    return pid if ours and _names_upper_of(argv, settings, name) else None


def _names_upper_of(argv: list[bytes], settings: LabSettings, name: str) -> bool:
    return any(arg.startswith(b"--overlay=") and arg.endswith(_overlay_upper(settings, name)) for arg in argv)


def _is_nspawn_for(pid: int, settings: LabSettings, name: str) -> bool:
    """Whether ``pid`` is the nspawn of this lab's node ``name``, known by its upper layer in this
    lab's state folder: another lab may run a node of the same name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn") and _names_upper_of(argv, settings, name)


def machine_name(settings: LabSettings, name: str) -> str:
    """nspawn's name for the node, unique on the machine (labs may share node names): nspawn names
    the node's network interface on the bridge after it, and two of the same name cannot exist.
    The node's hostname is its own name, from its /etc/hostname."""
    return f"{settings.bridge}-{name}"


def _overlay_upper(settings: LabSettings, name: str) -> bytes:
    """How start() names the node's upper layer in nspawn's --overlay argument."""
    return f":{node_dir(settings, name) / 'upper'}:/".encode()


def booted_runtime(settings: LabSettings, name: str) -> str:
    """The runtime the node was last prepared for."""
    try:
        return (node_dir(settings, name) / "runtime").read_text().strip()
    except FileNotFoundError:
        return "systemd"  # prepared before the lab knew runtimes


def booted_release(settings: LabSettings, name: str) -> int:
    """The Debian release the node's upper layer was made on."""
    try:
        return int((node_dir(settings, name) / "release").read_text())
    except FileNotFoundError:
        return 12  # made before the lab knew releases, when every node ran Debian 12


def _writable_cgroups(upper: Path, wanted: bool, write) -> None:
    """The unit that remounts the cgroup v1 controllers writable (for Docker), on nodes whose
    runtime is container; removed from a node that ran containers before."""
    cgroup_files = {
        CGROUP_SCRIPT.lstrip("/"): (CGROUP_SCRIPT_TEXT, 0o755),
        f"etc/systemd/system/{CGROUP_UNIT}": (CGROUP_UNIT_TEXT, 0o644),
    }
    enabled = upper / f"etc/systemd/system/multi-user.target.wants/{CGROUP_UNIT}"
    if wanted:
        for relative, (content, mode) in cgroup_files.items():
            write(relative, content, mode)
        enabled.parent.mkdir(parents=True, exist_ok=True)
        if not enabled.is_symlink():
            enabled.symlink_to(f"/etc/systemd/system/{CGROUP_UNIT}")
    else:
        for relative in [*cgroup_files, enabled.relative_to(upper)]:
            (upper / relative).unlink(missing_ok=True)


def prepare(settings: LabSettings, node: LabNode, all_nodes: list[LabNode], client_public_key: str,
            mirrors: dict[str, list[str]]) -> str:
    """Write the node's identity into its overlay's upper layer; returns its public host key line.

    An existing upper layer (the node ran before and was not taken down) is kept with what was
    installed on it; only the identity files are made to match the inventory again.
    """
    upper = node_dir(settings, node.name) / "upper"
    upper.mkdir(parents=True, exist_ok=True)
    (node_dir(settings, node.name) / "release").write_text(f"{node.release}\n")
    (node_dir(settings, node.name) / "runtime").write_text(f"{node.runtime}\n")

    def write(relative: str, content: str, mode: int = 0o644) -> None:
        path = upper / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)

    write("etc/hostname", node.name + "\n")
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{other.address} {other.name}" for other in all_nodes]
    # Nodes have no DNS: the mirror's name is pinned to an address the lab's firewall lets through.
    hosts += [f"{addresses[0]} {name}" for name, addresses in mirrors.items()]
    write("etc/hosts", "\n".join(hosts) + "\n")
    # ...and no name server either (nspawn's --resolv-conf=off keeps this file): a lookup outside
    # /etc/hosts goes to the node's own loopback and fails at once. Sent to the machine's resolver
    # through the lab's firewall, every other one waited out glibc's 5 s timeout (the reject answers
    # one of its two parallel queries), and every run probing Grafana's unreachable repository paid it.
    write("etc/resolv.conf", NO_NAME_SERVER)
    if not (upper / "etc/machine-id").exists():
        write("etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    dbus_id = upper / "var/lib/dbus/machine-id"
    if not dbus_id.is_symlink():
        dbus_id.parent.mkdir(parents=True, exist_ok=True)
        dbus_id.unlink(missing_ok=True)
        dbus_id.symlink_to("/etc/machine-id")
    write("etc/systemd/network/10-lab.network",
          f"[Match]\nName=host0\n\n[Network]\nAddress={node.address}/{settings.prefix_length}\n"
          f"Gateway={settings.gateway}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    # A bounded wait and retries: a fetch cut off mid-way must fail and retry, not hang.
    write("etc/apt/apt.conf.d/01lab-apt", 'Acquire::http::Timeout "30";\nAcquire::Retries "3";\n')
    ssh_dir = upper / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    write("root/.ssh/authorized_keys", client_public_key, 0o600)
    _writable_cgroups(upper, node.runtime == "container", write)
    host_key = upper / "etc/ssh/ssh_host_ed25519_key"
    if not host_key.exists():
        host_key.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{node.name}", "-f", str(host_key)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise LabError(f"ssh-keygen for {node.name}'s host key failed: {result.stderr.strip()}")
    return host_public_key(settings, node)


def host_public_key(settings: LabSettings, node: LabNode) -> str:
    """The node's host key as known_hosts wants it: "ssh-ed25519 AAAA..."."""
    pub = node_dir(settings, node.name) / "upper/etc/ssh/ssh_host_ed25519_key.pub"
    try:
        key_type, key_data = pub.read_text().split()[:2]
    except (FileNotFoundError, ValueError):
        raise LabError(f"{node.name} runs but its host key {pub} is missing: run lab down, then lab up") from None
    return f"{key_type} {key_data}"


def nspawn_command(settings: LabSettings, node: LabNode, base: Path) -> list[str]:
    """How the node is booted; a node that runs containers may make session keyrings (runc does)."""
    command = [
        "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-M", machine_name(settings, node.name), "-D", str(base),
        f"--overlay={base}{_overlay_upper(settings, node.name).decode()}", "-b", "--console=pipe",
        f"--network-bridge={settings.bridge}",
        # nspawn's default (auto) bind-mounts the host's zone file over the node's
        # /usr/share/zoneinfo/Etc/UTC, and dpkg cannot replace a mount point when tzdata is upgraded
        # ("unable to make backup link ... Invalid cross-device link"); a real node keeps its own.
        "--timezone=off",
        "--resolv-conf=off",
        # As systemd gives PID 1 on a real machine; otherwise nodes inherit this shell's hard limit
        # and no tuning inside a node could raise a service's open-file limit past it.
        f"--rlimit=RLIMIT_NOFILE={NODE_NOFILE_HARD}",
    ]
    if node.runtime == "container":
        command += [f"--system-call-filter={CONTAINER_SYSCALLS}"]
    return command


def start(settings: LabSettings, node: LabNode, base: Path) -> int:
    """Boot the node; returns the pid of the shell that runs its nspawn (and boots it again when it
    reboots). Does not wait for it to be ready."""
    folder = node_dir(settings, node.name)
    cgroups = cgroup_dirs(settings, node.name)
    # Left over from a node whose nspawn died without shutting it down.
    kill_leftover_processes(settings, node.name)
    remove_cgroups(settings, node.name)
    for cgroup in cgroups:
        cgroup.mkdir(parents=True, exist_ok=True)

    def enter_own_cgroup() -> None:  # runs in the child between fork and exec
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    nspawn = nspawn_command(settings, node, base)
    with open(folder / "console.log", "wb") as console:
        process = subprocess.Popen(
            ["sh", "-c", BOOT_AGAIN_ON_REBOOT, BOOT_LOOP_NAME, *nspawn], stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            preexec_fn=enter_own_cgroup, start_new_session=True,
        )
    (folder / "pid").write_text(str(process.pid))
    return process.pid


def stop(settings: LabSettings, name: str) -> None:
    """Shut the node down cleanly (SIGTERM to nspawn powers the node off), then kill if it hangs."""
    loop = _boot_loop_pid(settings, name)
    if loop:
        os.kill(loop, signal.SIGKILL)  # first, so a reboot under way cannot boot the node again
        _reap(loop)
    pid = running_pid(settings, name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _is_nspawn_for(pid, settings, name) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _is_nspawn_for(pid, settings, name):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    pid_file = node_dir(settings, name) / "pid"
    booted_by = pid_file.read_text().strip() if pid_file.exists() else ""
    pid_file.unlink(missing_ok=True)
    kill_leftover_processes(settings, name)
    remove_cgroups(settings, name)
    if booted_by.isdigit():
        _reap(int(booted_by))  # the shell start() left, when this process started it


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def remove(settings: LabSettings, name: str) -> None:
    shutil.rmtree(node_dir(settings, name), ignore_errors=True)


def known_nodes(settings: LabSettings) -> list[str]:
    nodes_dir = settings.state_dir / "nodes"
    return sorted(p.name for p in nodes_dir.iterdir()) if nodes_dir.is_dir() else []
