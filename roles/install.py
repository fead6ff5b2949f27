"""Where a component's software comes from, chosen per component in group data.

    prometheus = {"install": {"source": "apt"}}                       # Debian package (default)
    prometheus = {"install": {"source": "apt", "version": "2.42.0+ds-5+deb12u1"}}   # pinned
    nginx = {"install": {"source": "offline", "version": "1.22.1"}}    # .deb files from artifacts/

`offline` reads .deb files from the control machine's artifacts directory
(artifacts/<component>/<package>_<version>_<arch>.deb), for nodes without the package's repository.
A missing artifact stops the run with one line naming the component and what was looked for,
before any host is changed. (Grafana Labs' components have their own sources: roles/grafana_repo.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pyinfra import host
from pyinfra.facts.deb import DebArch, DebPackages
from pyinfra.operations import apt, files

from homelab.config import ConfigError, FieldError, StrictModel
from roles.common import REPO_ROOT

REMOTE_DEB_DIR = "/var/cache/homelab-ops/debs"
# apt's package lists are refreshed before installing when older than this.
APT_LISTS_MAX_AGE_S = 3600


class Install(StrictModel):
    """The `install` key of a role's group data."""

    source: Literal["apt", "offline"] = "apt"
    # apt: an exact Debian version to pin (optional); offline: the version of the .deb files (required).
    version: str | None = None
    # offline: folder on the control machine, relative to the repo root.
    artifacts_dir: str = "artifacts"

    @model_validator(mode="after")
    def _complete_for_its_source(self) -> "Install":
        if self.source == "offline" and not self.version:
            raise FieldError("version", "required for source 'offline' (the version of the .deb files)")
        return self


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


def apt_packages(name: str, packages: list[str]) -> None:
    """Debian packages installed (``name`` or ``name=version``), without recommends, apt's lists
    refreshed first only when one of them is to be installed.

    pyinfra's update with cache_time alone runs `apt-get update` on every run once the lists are an
    hour old, and reports it as a change: a converged node rerun after an hour was never unchanged.
    """
    installed = host.get_fact(DebPackages)

    def to_install(spec: str) -> bool:
        package, _, version = spec.partition("=")
        return package not in installed or bool(version) and version not in installed[package]

    apt.packages(name=name, packages=packages, update=any(map(to_install, packages)),
                 cache_time=APT_LISTS_MAX_AGE_S, no_recommends=True)


def install_packages(component: str, packages: list[str], install: Install) -> None:
    """Install a component's Debian packages from its chosen source (apt or offline)."""
    if install.source == "apt":
        pinned = [f"{name}={install.version}" for name in packages] if install.version else packages
        apt_packages(f"Install {component} ({', '.join(packages)})", pinned)
        return
    arch = host.get_fact(DebArch)
    for deb in offline_debs(component, packages, install, arch):
        remote = f"{REMOTE_DEB_DIR}/{deb.name}"
        files.put(name=f"Upload {deb.name}", src=str(deb), dest=remote, mode="0644")
        apt.deb(name=f"Install {deb.name}", src=remote)
