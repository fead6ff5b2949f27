"""The base images lab nodes boot from: one per Debian release, made once with debootstrap, then read-only.

It is built in a temporary folder and renamed into place only when complete, so an interrupted
build never leaves a half image that a later `lab up` would trust. The folder name carries a hash
of what went into it: changing the package list builds a new image instead of reusing a stale one.
The image is generic: no hostname, machine-id, host keys or addresses; each node's overlay adds
its own (see nodes.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from homelab.lab.errors import LabError
from homelab.releases import RELEASES, DebianRelease
PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2", "ca-certificates"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Same for every node, so it belongs in the base: networkd configures host0 from the node's
# .network file; sshd offers only the ed25519 key each node gets; dpkg skips fsync (a lab node's
# disk is disposable, and dpkg's fsyncs dominate package install time).
GENERIC_FILES = {
    "etc/ssh/sshd_config.d/10-lab.conf": "HostKey /etc/ssh/ssh_host_ed25519_key\n",
    "etc/dpkg/dpkg.cfg.d/10-lab-unsafe-io": "force-unsafe-io\n",
    "etc/apt/apt.conf.d/10-lab-no-languages": 'Acquire::Languages "none";\n',
}
ENABLED_UNITS = {
    "etc/systemd/system/multi-user.target.wants/systemd-networkd.service": "/lib/systemd/system/systemd-networkd.service",
    "etc/systemd/system/sockets.target.wants/systemd-networkd.socket": "/lib/systemd/system/systemd-networkd.socket",
    "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service":
        "/lib/systemd/system/systemd-networkd-wait-online.service",
}
# Per-node identity that debootstrap's package scripts created; nodes must not share it.
NODE_IDENTITY = ["etc/hostname", "etc/machine-id", "var/lib/dbus/machine-id"]


def host_mirror() -> str:
    """The Debian mirror this machine's own apt uses (the only place outside the lab nodes may reach).

    It serves every release, whichever one this machine runs.
    """
    suites = {release.codename for release in RELEASES.values()}
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uri = None
        for line in source.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "URIs":
                uri = value.split()[0]
            elif key.strip() == "Suites" and uri and suites & set(value.split()):
                return uri.rstrip("/")
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "deb" and fields[2] in suites:
                return fields[1].rstrip("/")
    return DEFAULT_MIRROR


def sources_list(mirror: str, suite: str) -> str:
    security = mirror.rsplit("/", 1)[0] + "/debian-security"
    return (
        f"deb {mirror} {suite} main\n"
        f"deb {mirror} {suite}-updates main\n"
        f"deb {security} {suite}-security main\n"
    )


def debootstrap(suite: str, packages: list[str], target: Path, mirror: str) -> str | None:
    """A minbase tree of ``suite`` with ``packages`` made in ``target`` from ``mirror`` (the lab's base
    images and the containers' base). None once made; else the last line debootstrap printed, and
    ``target`` is removed."""
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(target), mirror],
        capture_output=True, text=True,
    )
    if result.returncode == 0:
        return None
    shutil.rmtree(target, ignore_errors=True)
    return ((result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"])[0]


def image_id(mirror: str, suite: str) -> str:
    recipe = repr((suite, PACKAGES, sorted(GENERIC_FILES.items()), sorted(ENABLED_UNITS.items()), mirror))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_path(cache_dir: Path, mirror: str, suite: str) -> Path:
    return cache_dir / f"base-{suite}-{image_id(mirror, suite)}"


def ensure_base_image(cache_dir: Path, release: DebianRelease, log) -> Path:
    """The cached base image of ``release``, built first if missing. ``log`` receives progress lines."""
    mirror = host_mirror()
    suite = release.codename
    final = image_path(cache_dir, mirror, suite)
    if (final / "usr/lib/systemd/systemd").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    for leftover in cache_dir.glob(f"base-{suite}-*.building-*"):  # from a build that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    building = cache_dir / f"{final.name}.building-{os.getpid()}"
    log(f"building the Debian {release.version} ({suite}) base image with debootstrap from {mirror} "
        "(about a minute, once)")
    failure = debootstrap(suite, PACKAGES, building, mirror)
    if failure:
        raise LabError(f"debootstrap {suite} from {mirror} failed: {failure}")
    _make_generic(building, mirror, suite)
    building.rename(final)
    for old in cache_dir.glob(f"base-{suite}-*"):  # images of an older recipe
        if old != final and ".building-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _make_generic(root: Path, mirror: str, suite: str) -> None:
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    for relative in NODE_IDENTITY:
        (root / relative).unlink(missing_ok=True)
    for relative, content in GENERIC_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for relative, target in ENABLED_UNITS.items():
        link = root / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (root / "etc/apt/sources.list").write_text(sources_list(mirror, suite))
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
