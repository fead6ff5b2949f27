"""The private dockerd the tests and benches use: it answers, stopping it leaves nothing behind, and
what a killed owner leaves behind is removed by the next engine, never what a live engine uses."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from homelab.containers import base, engine


def mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(f"{path}/")]


@pytest.mark.slow
@pytest.mark.skipif(engine.unavailable_reason() is not None, reason=str(engine.unavailable_reason()))
def test_a_stopped_engine_leaves_no_daemon_mount_or_folder():
    with engine.private_engine() as running:
        exec_root = Path(running.docker_host.removeprefix("unix://")).parent
        data_root = running.data_root
        pid = int((exec_root / "docker.pid").read_text())
        assert running.client.info()["DockerRootDir"] == str(data_root)
        # Running a container makes dockerd mount its network namespace handle below the exec-root.
        tag = base.ensure_imported(running.client, base.ensure_tree())
        running.client.containers.run(tag, ["true"], network_mode="host", remove=True)
        assert mounts_below(exec_root)
    assert not Path(f"/proc/{pid}").exists()
    assert mounts_below(exec_root) == []
    assert not exec_root.exists() and not data_root.exists()


# Starts an engine, runs a container in it (so dockerd mounts its network namespace handle below
# the exec-root), says where it lives, and waits to be killed: a test run or bench cut short.
OWNER = """
import sys, time
from homelab.containers import base, engine
with engine.private_engine() as running:
    tag = base.ensure_imported(running.client, base.ensure_tree())
    running.client.containers.run(tag, ["true"], network_mode="host", remove=True)
    print(running.docker_host.removeprefix("unix://"), running.data_root, flush=True)
    time.sleep(600)
"""


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.slow
@pytest.mark.skipif(engine.unavailable_reason() is not None, reason=str(engine.unavailable_reason()))
def test_a_killed_owners_engine_stops_and_the_next_engine_removes_its_roots_but_no_live_ones(docker_engine):
    live_exec_root = Path(docker_engine.docker_host.removeprefix("unix://")).parent
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    socket_path, data_root = owner.stdout.readline().split()
    exec_root, data_root = Path(socket_path).parent, Path(data_root)
    try:
        assert processes_mentioning(str(exec_root))  # dockerd and its containerd
        owner.kill()  # no cleanup of its own runs
        owner.wait()
        deadline = time.monotonic() + engine.STOP_TIMEOUT_S
        while processes_mentioning(str(exec_root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(exec_root)) == []
        # What only the owner's cleanup would have removed: both folders, and the netns handle mounted.
        assert data_root.is_dir() and mounts_below(exec_root)
        with engine.private_engine() as following:
            assert following.client.ping()
            assert not exec_root.exists() and not data_root.exists() and mounts_below(exec_root) == []
            # The engine that was running all along keeps its roots, and answers.
            assert live_exec_root.is_dir() and docker_engine.data_root.is_dir()
            assert docker_engine.client.ping()
    finally:
        owner.kill()
        engine._remove_root(exec_root)
        engine._remove_root(data_root)
