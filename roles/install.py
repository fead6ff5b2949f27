"""Where a component's software comes from, chosen per component in group data.

    prometheus = {"install": {"source": "apt"}}                       # Debian package (default)
    prometheus = {"install": {"source": "apt", "version": "2.42.0+ds-5+deb12u1"}}   # pinned
    grafana = {"install": {"source": "offline", "version": "11.3.0"}}  # .deb files from artifacts/
    node_exporter = {"install": {"source": "release", "version": "1.8.2", "sha256": "..."}}

`offline` reads .deb files from the control machine's artifacts directory
(artifacts/<component>/<package>_<version>_<arch>.deb), for nodes without the vendor's repository.
`release` fetches an upstream tarball on the node, checks its sha256 and unpacks it under /opt.
A missing artifact or checksum stops the run with one line naming the component and what was
looked for, before any host is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pyinfra import host
from pyinfra.facts.deb import DebArch
from pyinfra.operations import apt, files, server

from homelab.config import ConfigError, FieldError, StrictModel
from roles.common import REPO_ROOT

REMOTE_DEB_DIR = "/var/cache/homelab-ops/debs"
RELEASE_ROOT = "/opt"
DEBIAN_TO_GO_ARCH = {"amd64": "amd64", "arm64": "arm64", "armhf": "armv7", "i386": "386"}


class Install(StrictModel):
    """The `install` key of a role's group data."""

    source: Literal["apt", "offline", "release"] = "apt"
    # apt: an exact Debian version to pin (optional); offline/release: the upstream version (required).
    version: str | None = None
    # release: sha256 of the tarball for this node's architecture.
    sha256: str | None = None
    # offline: folder on the control machine, relative to the repo root.
    artifacts_dir: str = "artifacts"

    @model_validator(mode="after")
    def _complete_for_its_source(self) -> "Install":
        if self.source in ("offline", "release") and not self.version:
            raise FieldError("version", f"required for source {self.source!r} (the pinned upstream version)")
        if self.source == "release" and not (self.sha256 and re.fullmatch(r"[0-9a-f]{64}", self.sha256)):
            raise FieldError("sha256", "required for source 'release': 64 hex digits of the tarball's sha256")
        return self


@dataclass(frozen=True)
class Release:
    """How a component's upstream tarball is named and what it holds."""

    # URL with {version} and {arch} (Go-style arch: amd64, arm64, armv7)
    url: str
    # directory the tarball unpacks to, with {version} and {arch}
    top_dir: str
    binaries: tuple[str, ...]


def offline_debs(component: str, packages: list[str], install: Install, arch: str) -> list[Path]:
    """The .deb files for ``packages`` in the artifacts dir; one-line error naming what is missing."""
    folder = REPO_ROOT / install.artifacts_dir / component
    found = []
    for package in packages:
        pattern = f"{package}_{install.version}*_{arch}.deb"
        matches = sorted(folder.glob(pattern)) + sorted(folder.glob(f"{package}_{install.version}*_all.deb"))
        if not matches:
            raise ConfigError(
                f"{component}.install", "source",
                f"offline artifact not found: looked for {folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder}/{pattern}"
                f" (put the vendor's .deb files there, or use source: apt)",
            )
        found.append(matches[0])
    return found


def install_packages(component: str, packages: list[str], install: Install) -> None:
    """Install a component's Debian packages from its chosen source (apt or offline)."""
    if install.source == "release":
        raise ConfigError(f"{component}.install", "source", "'release' is not available for this component; use apt or offline")
    if install.source == "apt":
        pinned = [f"{name}={install.version}" for name in packages] if install.version else packages
        apt.packages(
            name=f"Install {component} ({', '.join(packages)})",
            packages=pinned,
            update=True,
            cache_time=3600,
            no_recommends=True,
        )
        return
    arch = host.get_fact(DebArch)
    for deb in offline_debs(component, packages, install, arch):
        remote = f"{REMOTE_DEB_DIR}/{deb.name}"
        files.put(name=f"Upload {deb.name}", src=str(deb), dest=remote, mode="0644")
        apt.deb(name=f"Install {deb.name}", src=remote)


def install_release(component: str, release: Release, install: Install) -> str:
    """Download, verify and unpack an upstream tarball; link its binaries into /usr/local/bin.

    Returns the unpacked directory. The role supplies the systemd unit that runs the binary.
    """
    arch = DEBIAN_TO_GO_ARCH.get(host.get_fact(DebArch), "amd64")
    url = release.url.format(version=install.version, arch=arch)
    tarball = f"/var/cache/homelab-ops/{url.rsplit('/', 1)[-1]}"
    top = f"{RELEASE_ROOT}/{release.top_dir.format(version=install.version, arch=arch)}"
    download = files.download(
        name=f"Download {component} {install.version}", src=url, dest=tarball, sha256sum=install.sha256,
    )
    server.shell(
        name=f"Unpack {component} {install.version}",
        commands=[f"tar -xzf {tarball} -C {RELEASE_ROOT}"],
        _if=download.did_change,
    )
    for binary in release.binaries:
        files.link(name=f"Link {binary}", path=f"/usr/local/bin/{binary}", target=f"{top}/{binary}")
    return top
