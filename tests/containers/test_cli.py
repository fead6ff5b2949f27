"""`homelab image`: the command a person runs, against the session's private engine via DOCKER_HOST."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from homelab.containers import images

HOMELAB = Path(sys.executable).parent / "homelab"


def homelab(*args: str, docker_host: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    return subprocess.run([str(HOMELAB), *args], capture_output=True, text=True, env=env, timeout=600)


def test_an_unknown_image_name_is_one_line_naming_the_choices():
    result = homelab("image", "build", "postgres")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "homelab: homelab image: name: expected one of toy-redis, alert-relay, got 'postgres'"]


def test_no_engine_is_one_line_saying_what_to_do(tmp_path):
    result = homelab("image", "save", "-o", str(tmp_path), docker_host=f"unix://{tmp_path}/absent.sock")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("homelab: DOCKER_HOST: cannot reach a Docker engine") and "start dockerd" in line


@pytest.mark.slow
def test_save_writes_a_tarball_docker_load_reads(built_images, tmp_path):
    spec = images.specs()["toy-redis"]
    result = homelab("image", "save", "-o", str(tmp_path), spec.name, docker_host=built_images.engine.docker_host)
    assert result.returncode == 0, result.stderr
    tarball = tmp_path / images.tarball_name(spec)
    assert result.stdout.strip() == f"{tarball}: {spec.tag}"
    with tarfile.open(tarball) as saved:
        assert "manifest.json" in saved.getnames()
    loaded = built_images.client.images.load(tarball.read_bytes())
    assert spec.tag in loaded[0].tags
