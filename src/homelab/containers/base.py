"""The Debian base our images start from: a debootstrap tree made once, imported into an engine.

No registry is reachable here (no `docker pull`), so the base is built the way the lab's is
(debootstrap from the Debian mirror the host's apt uses), but smaller: minbase with Python and CA
certificates only, no systemd or sshd, because a container runs one process. The tree is cached in
/var/cache/homelab-images and renamed into place only when complete; its folder name hashes the
recipe, so changing the package list makes a new base rather than reusing a stale one.

`docker import` records the digest of the tar it is given, so the tar is made deterministic (names
sorted, numeric owners, no access times): the same tree always gives the same base layer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import docker

from homelab.config import ConfigError
from homelab.lab.image import debootstrap, host_mirror, sources_list

SUITE = "bookworm"
PACKAGES = ["python3", "ca-certificates"]
CACHE_DIR = Path(os.environ.get("HOMELAB_IMAGE_CACHE", "/var/cache/homelab-images"))
REPOSITORY = "homelab/debian-base"
# debootstrap copies these from the host; Docker provides each container's own at run time.
HOST_SPECIFIC = ["etc/hostname", "etc/resolv.conf", "etc/hosts", "etc/machine-id"]
# Left by debootstrap and apt: logs of this build and downloaded packages, not part of a system.
BUILD_LEFTOVERS = ["var/log", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old",
                   "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old"]


def recipe_id(mirror: str) -> str:
    recipe = repr((SUITE, PACKAGES, HOST_SPECIFIC, BUILD_LEFTOVERS, mirror))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def tree_path(mirror: str | None = None) -> Path:
    """Where the base tree of the current recipe is cached (made or not)."""
    return CACHE_DIR / f"base-{SUITE}-{recipe_id(mirror or host_mirror())}"


def ensure_tree(log=print) -> Path:
    """The cached base tree, made with debootstrap first if missing (about a minute, once)."""
    mirror = host_mirror()
    final = tree_path(mirror)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Test sessions may ask at the same time: one builds, the others wait for it.
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "usr/bin/python3").exists():
            return final
        building = final.with_name(final.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        log(f"building the image base with debootstrap from {mirror} (about a minute, once)")
        failure = debootstrap(SUITE, PACKAGES, building, mirror)
        if failure:
            raise ConfigError(f"debootstrap {SUITE}", "", f"failed with the mirror {mirror}: {failure}")
        _trim(building, mirror)
        building.rename(final)
        for old in CACHE_DIR.glob(f"base-{SUITE}-*"):  # trees of an older recipe
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _trim(root: Path, mirror: str) -> None:
    for relative in HOST_SPECIFIC:
        (root / relative).unlink(missing_ok=True)
    for relative in BUILD_LEFTOVERS:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()
        else:
            path.unlink(missing_ok=True)
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text(sources_list(mirror, SUITE))


def python_version(tree: Path) -> str:
    """The tree's Python as "3.11", from Debian's /usr/bin/python3 -> python3.11 link."""
    return os.readlink(tree / "usr/bin/python3").removeprefix("python")


def tag_of(tree: Path) -> str:
    """The base image's tag: it names the recipe, so another recipe is another image."""
    return f"{REPOSITORY}:{tree.name.removeprefix('base-')}"


def ensure_imported(client: docker.DockerClient, tree: Path) -> str:
    """Import ``tree`` into the engine as the base image unless it already has it; returns its tag."""
    tag = tag_of(tree)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        import_tree(client, tree, tag)
    return tag


def import_tree(client: docker.DockerClient, tree: Path, tag: str) -> docker.models.images.Image:
    """`docker import` of ``tree`` from a deterministic tar, tagged ``tag``."""
    repository, _, version = tag.partition(":")
    tar = subprocess.Popen(
        ["tar", "-C", str(tree), "--sort=name", "--numeric-owner", "--format=gnu", "-cf", "-", "."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        client.api.import_image_from_stream(tar.stdout, repository=repository, tag=version)
    finally:
        tar.stdout.close()
        _, stderr = tar.communicate()
    if tar.returncode != 0:
        raise ConfigError(tree, "", f"tar of the base tree failed: {stderr.decode(errors='replace').strip()}")
    return client.images.get(tag)  # the import reports errors only in its progress stream
