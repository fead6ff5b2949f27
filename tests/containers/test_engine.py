"""The private dockerd the tests and benches use: it answers, and stopping it leaves nothing behind."""

from __future__ import annotations

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
