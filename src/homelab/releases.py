"""The Debian releases nodes may run, and what differs between them for us.

A lab node's release is host data `debian_release` (default DEFAULT_RELEASE); the lab boots a base
image of that release. Roles adapt to the release a node actually runs (its /etc/os-release), so
a node upgraded in place gets the new release's settings on the next deploy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DebianRelease:
    version: int
    codename: str
    # Debian's python3 on that release: our services' wheels are built for it.
    python: str
    # glibc on that release: the newest manylinux tag its binary wheels may carry.
    glibc: tuple[int, int]


RELEASES: dict[int, DebianRelease] = {
    12: DebianRelease(12, "bookworm", "3.11", (2, 36)),
    13: DebianRelease(13, "trixie", "3.13", (2, 41)),
}
DEFAULT_RELEASE = 13
SUPPORTED = ", ".join(f"{r.version} ({r.codename})" for r in RELEASES.values())


class UnsupportedRelease(ValueError):
    pass


def debian_release(value: object) -> DebianRelease:
    """The release for host data `debian_release` (12 or 13), or UnsupportedRelease naming the choices."""
    if isinstance(value, int) and not isinstance(value, bool) and value in RELEASES:
        return RELEASES[value]
    raise UnsupportedRelease(f"expected one of {SUPPORTED}, got {value!r}")
