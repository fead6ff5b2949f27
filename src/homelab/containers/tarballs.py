"""The images a deploy ships to nodes whose runtime is `container`, built only when inputs change.

A node gets an image as a `docker save` tarball (no registry) and keeps it while its image id
matches. The id covers the image's labels, and the build-date and revision labels differ on every
build, so rebuilding unchanged inputs would give a new id and make every deploy reload every node.
Instead an image is built once per set of inputs (the wheel set, the base recipe, the rendered
Dockerfile, the healthcheck) and its tarball cached as build/images/<name>-<version>-<inputs>.tar;
a deploy with the same inputs ships the same tarball with the same id.

Building starts a private dockerd (homelab.containers.engine) for the length of the build, so a
deploy needs no Docker engine running on the control machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from homelab.config import ConfigError
from homelab.containers import base, engine, images
from roles import python_app
from roles.common import REPO_ROOT

IMAGE_CACHE = REPO_ROOT / "build" / "images"


@dataclass(frozen=True)
class ImageTarball:
    spec: images.ImageSpec
    path: Path
    # "sha256:<hex>", as `docker image inspect --format '{{.Id}}'` prints it once loaded
    image_id: str


def inputs_digest(spec: images.ImageSpec) -> str:
    """Hash of everything that goes into ``spec``'s layers (not its labels)."""
    wheel_set = python_app.build_wheels(spec.app.source_dir, images.wheel_target())
    dockerfile = images.render_dockerfile(spec, base.tag_of(base.tree_path()), images.pip_wheel().name)
    digest = hashlib.sha256()
    for part in (wheel_set.digest.encode(), dockerfile.encode(), images.HEALTHCHECK_SOURCE.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def image_id_of(tarball: Path) -> str:
    """The image id recorded in a `docker save` tarball (its config file's name is its digest)."""
    try:
        with tarfile.open(tarball) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))
        config = manifest[0]["Config"]
    except (OSError, KeyError, IndexError, TypeError, tarfile.TarError, json.JSONDecodeError) as exc:
        raise ConfigError(tarball, "manifest.json", f"expected a `docker save` tarball ({exc})") from None
    return "sha256:" + Path(config).name.removesuffix(".json")


@cache
def ensure_tarball(name: str, log=print) -> ImageTarball:
    """``name``'s image tarball for the current inputs, built and saved first if missing."""
    spec = images.spec_named(name)
    path = IMAGE_CACHE / f"{spec.name}-{spec.version}-{inputs_digest(spec)}.tar"
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    # Deploys from several sessions may want the same image: one builds, the others wait for it.
    with open(IMAGE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            log(f"building the {spec.tag} image for nodes running containers")
            # In a process of its own: inside a deploy, pyinfra's gevent has patched pipes and
            # sockets, and the docker SDK's streamed import of the base tree fails under it
            # ("FileObjectClosed: Bad file descriptor").
            built = subprocess.run([sys.executable, "-m", __name__, name, str(path)], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True)
            if built.returncode != 0 or not path.is_file():
                raise ConfigError(IMAGE_CACHE, name, f"building the {spec.tag} image failed: "
                                                     f"{(built.stderr or built.stdout).strip()[-2000:]}")
            for old in IMAGE_CACHE.glob(f"{spec.name}-*.tar"):  # tarballs of older inputs
                if old != path:
                    old.unlink(missing_ok=True)
    return ImageTarball(spec, path, image_id_of(path))


def build_tarball(name: str, path: Path) -> None:
    """Build ``name``'s image in a private engine and save it to ``path``."""
    spec = images.spec_named(name)
    with tempfile.TemporaryDirectory(dir=IMAGE_CACHE, prefix=".building-") as scratch, \
            engine.private_engine() as running:
        images.build(running.client, spec, log=print)
        images.save(running.client, name, Path(scratch)).rename(path)


if __name__ == "__main__":
    build_tarball(sys.argv[1], Path(sys.argv[2]))
