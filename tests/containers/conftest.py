"""A private dockerd for the session, and both images built in it, saved, removed and loaded back.

Every container test runs the images that came out of a `docker save` tarball, so a test that
passes also proves the images travel without a registry.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from homelab.containers import engine, images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def docker_engine():
    reason = engine.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with engine.private_engine() as running:
        yield running


@dataclass
class BuiltImages:
    engine: engine.Engine
    # name -> the image as first built (RootFS layer digests, labels, config)
    built: dict[str, docker.models.images.Image]
    # name -> its `docker save` tarball
    tarballs: dict[str, Path]

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client


@pytest.fixture(scope="session")
def built_images(docker_engine, tmp_path_factory) -> BuiltImages:
    client = docker_engine.client
    built = {name: images.build(client, spec) for name, spec in images.specs().items()}
    folder = tmp_path_factory.mktemp("images")
    tarballs = {name: images.save(client, name, folder) for name in built}
    for image in built.values():
        client.images.remove(image.id, force=True)
    for tarball in tarballs.values():
        with tarball.open("rb") as data:
            client.images.load(data)
    return BuiltImages(docker_engine, built, tarballs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def image_user_ids(client: docker.DockerClient, tag: str) -> tuple[int, int]:
    """uid and gid the image runs as, asked of the image itself."""
    output = client.containers.run(tag, entrypoint=["sh", "-c", "id -u; id -g"], network_mode="none", remove=True)
    uid, gid = output.decode().split()
    return int(uid), int(gid)
