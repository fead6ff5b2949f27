"""Grafana Labs' packages (grafana, loki, promtail, alloy): their apt repository, or offline .deb files.

    grafana = {"install": {"version": "11.6.0"}}                        # apt.grafana.com, pinned
    loki = {"install": {"source": "offline", "version": "3.5.0"}}       # artifacts/loki/loki_3.5.0*_<arch>.deb

`grafana-apt` adds the deb822 source https://apt.grafana.com stable main, signed by the vendored key
templates/grafana/grafana-apt-key.asc, and installs the pinned version. The key file was taken from
Debian's extrepo-offline-data 1.0.6~deb13u1 (debian/trixie/grafana.asc), keeping only Grafana Labs'
current signing key, fingerprint B53A E77B ADB6 30A6 8304 6005 963F A277 1045 8545 (expires
2027-08-22; when it does, replace the file with https://apt.grafana.com/gpg.key; the fingerprint
check below refuses any other key).

Nothing is written to the node before the repository is known to be reachable from it: an
unreachable source left in sources.list.d would break `apt-get update` for every other role. When
it is not reachable and the packages are not installed yet, that host's deploy fails with one line
naming the component, the source tried and how to provide offline artifacts.

What each package installs (binary, unit, user, config path, how apt and the release page spell its
version) cannot be observed here, since the packages cannot be installed on this machine: each
component's `roles/<component>/package.py` holds those facts once, as a `VendorPackage`, with the
upstream file and version they were read from; the role and its tests read them from there.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Literal

from pydantic import Field
from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.facts.deb import DebArch, DebPackages
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError, StrictModel
from roles.common import REPO_ROOT, TEMPLATES_DIR, render
from roles.install import REMOTE_DEB_DIR

GRAFANA_APT_URL = "https://apt.grafana.com"
GRAFANA_APT_SUITE = "stable"
KEY_FILE = TEMPLATES_DIR / "grafana" / "grafana-apt-key.asc"
KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
REMOTE_KEYRING = "/etc/apt/keyrings/grafana.asc"
SOURCES_FILE = "/etc/apt/sources.list.d/grafana.sources"
# The roles whose packages come from Grafana Labs.
GRAFANA_COMPONENTS = {"grafana", "loki", "promtail", "alloy"}


@dataclass(frozen=True)
class Upstream:
    """Where a package fact was read: a file of a repository at a release tag."""

    repo: str
    tag: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class VendorPackage:
    """What one of Grafana Labs' .deb packages installs and how it is named, as its packaging says.

    Paths and names are copied from ``read_from``; tests check that they agree with each other (the
    checker is the binary the unit runs, versions and asset names follow the package builder's rules).
    """

    name: str
    read_from: tuple[Upstream, ...]
    # nfpm and fpm without --iteration: the Debian version is the release version ("3.5.0");
    # fpm --iteration N appends "-N" ("1.10.0-1").
    debian_revision: str | None
    # Release asset file name; {debian_version} and {arch} (Debian's name: amd64, arm64) filled in.
    asset: str
    unit: str
    # The unit's ExecStart, verbatim.
    exec_start: str
    # The program that does the work: the ExecStart binary, or what its wrapper script execs.
    binary: str
    # The user the unit runs as and the group it runs with (the user's primary group when the unit
    # sets no Group=).
    user: str
    group: str
    # The commands the package's install script runs to create the user (and group), quoted from it.
    user_setup: str
    config_file: str
    # Arguments that check a config without serving, after the binary; {staged} is the file checked.
    check_args: str | None = None
    # Wrapper scripts the package installs: path -> the command each one execs.
    wrappers: dict[str, str] = field(default_factory=dict)
    # Groups the package's scripts add the user to, for reading logs.
    extra_groups: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        return self.unit.removesuffix(".service")

    def debian_version(self, version: str) -> str:
        """The version apt and dpkg show for release ``version``."""
        return f"{version}-{self.debian_revision}" if self.debian_revision else version

    def asset_name(self, version: str, arch: str) -> str:
        """The release asset's file name for release ``version`` on Debian architecture ``arch``."""
        return self.asset.format(debian_version=self.debian_version(version), arch=arch)

    @property
    def check(self) -> str:
        """The checker command for roles.common.checked_file; {staged} is the staged config."""
        if not self.check_args:
            raise ValueError(f"{self.name}: its package has no config checker")
        return f"{self.binary} {self.check_args}"

    def exec_start_option(self, option: str) -> str:
        """The value of ``--option=value`` in the unit's ExecStart (e.g. alloy's --storage.path)."""
        match = re.search(rf"(?:^|\s){re.escape(option)}=(\S+)", self.exec_start)
        if not match:
            raise ValueError(f"{self.name}: {self.unit}'s ExecStart sets no {option}")
        return match.group(1)


class GrafanaInstall(StrictModel):
    """The `install` key of the grafana, loki, promtail and alloy group data."""

    source: Literal["grafana-apt", "offline"] = "grafana-apt"
    # The release version to pin (e.g. "11.6.0"); the Debian version apt shows is derived from it
    # by the component's VendorPackage (Alloy's "1.10.0" is "1.10.0-1" to apt).
    version: str = Field(pattern=r"^[0-9][0-9A-Za-z.+~]*$")
    # offline: folder on the control machine, relative to the repo root, holding <component>/*.deb
    artifacts_dir: str = "artifacts"


def key_fingerprints(armored: str) -> list[str]:
    """The v4 fingerprints of the primary public keys in an ASCII-armored OpenPGP key file.

    Only the primary-key packets are read (RFC 4880 sections 4.2, 6 and 12.2), which is all a
    fingerprint check needs, so the control machine does not need gpg.
    """
    lines = armored.strip().splitlines()
    try:
        start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        end = lines.index("-----END PGP PUBLIC KEY BLOCK-----")
    except ValueError:
        return []
    body = lines[start + 1:end]
    # Armor headers ("Version: ...") end at the first blank line; "=XXXX" is the CRC24 line.
    if "" in body:
        body = body[body.index("") + 1:]
    data = base64.b64decode("".join(line for line in body if not line.startswith("=")))
    fingerprints = []
    offset = 0
    while offset < len(data):
        header = data[offset]
        if header & 0x40:  # new-format packet header
            tag = header & 0x3F
            first = data[offset + 1]
            if first < 192:
                length, offset = first, offset + 2
            elif first < 224:
                length, offset = ((first - 192) << 8) + data[offset + 2] + 192, offset + 3
            else:
                length, offset = int.from_bytes(data[offset + 2:offset + 6], "big"), offset + 6
        else:  # old-format: the length type says how many length bytes follow
            tag = (header >> 2) & 0x0F
            size = (1, 2, 4)[header & 0x03]
            length = int.from_bytes(data[offset + 1:offset + 1 + size], "big")
            offset += 1 + size
        packet = data[offset:offset + length]
        if tag == 6 and packet[:1] == b"\x04":
            digest = hashlib.sha1(b"\x99" + len(packet).to_bytes(2, "big") + packet).hexdigest()
            fingerprints.append(digest.upper())
        offset += length
    return fingerprints


def checked_key() -> str:
    """The vendored key file's text, once it is known to hold only the expected key."""
    where = KEY_FILE.relative_to(REPO_ROOT)
    try:
        armored = KEY_FILE.read_text()
    except OSError as exc:
        raise ConfigError(where, "", f"cannot read Grafana's apt signing key ({exc.strerror})") from None
    found = key_fingerprints(armored)
    if found != [KEY_FINGERPRINT]:
        raise ConfigError(
            where, "",
            f"expected exactly the key {KEY_FINGERPRINT} (Grafana Labs' apt signing key), found {found or 'no key'}",
        )
    return armored


def render_sources() -> str:
    return render("grafana/grafana.sources.j2", url=GRAFANA_APT_URL, suite=GRAFANA_APT_SUITE,
                  keyring=REMOTE_KEYRING)


class AptCanFetch(FactBase):
    """Whether apt on the node, with its proxy settings, can fetch ``url``."""

    def command(self, url: str) -> str:
        # apt-helper is on every Debian and uses apt's own proxy settings; curl may not be there yet.
        # One try: apt's default retries with backoff cost 7 s per refused check.
        return (
            "tmp=$(mktemp) && timeout 30 /usr/lib/apt/apt-helper -o Acquire::Retries=0 download-file "
            f"{shlex.quote(url)} \"$tmp\" "
            ">/dev/null 2>&1; status=$?; rm -f \"$tmp\"; echo $status"
        )

    def process(self, output):
        return output[-1].strip() == "0"


def unreachable_message(package: VendorPackage, install: GrafanaInstall, host_name: str) -> str:
    component = package.name
    return (
        f"{component}: source grafana-apt: {GRAFANA_APT_URL} is not reachable from {host_name}; "
        f"put Grafana Labs' release asset {package.asset_name(install.version, '<arch>')} in "
        f"{install.artifacts_dir}/{component}/ on the control machine and set "
        f"{component}.install.source = 'offline' in group data"
    )


def offline_deb(package: VendorPackage, install: GrafanaInstall, arch: str) -> Path:
    """The release asset in the artifacts folder; a one-line error naming the file when it is missing."""
    folder = REPO_ROOT / install.artifacts_dir / package.name
    deb = folder / package.asset_name(install.version, arch)
    if not deb.is_file():
        shown = deb.relative_to(REPO_ROOT) if deb.is_relative_to(REPO_ROOT) else deb
        raise ConfigError(f"{package.name}.install", "source",
                          f"offline artifact not found: looked for {shown} (Grafana Labs' release asset "
                          f"for {package.name} {install.version}; put it there, or use source 'grafana-apt')")
    return deb


def runs_on(member, component: str) -> bool:
    """Whether inventory host ``member`` runs ``component`` (a role's data key) once deployed.

    Where Grafana Labs' packages may be skipped (`vendor_packages_optional`: lab nodes, which reach
    only Debian's mirror), they run only when installed from offline .debs; the prometheus role
    scrapes and probes them only then, or the lab would alert on what it never ran.
    """
    if component not in GRAFANA_COMPONENTS or not member.data.get("vendor_packages_optional"):
        return True
    install = (member.data.get(component) or {}).get("install") or {}
    return install.get("source") == "offline"


def install_grafana_package(package: VendorPackage, install: GrafanaInstall) -> bool:
    """Install a Grafana Labs component's package at the pinned version.

    Returns False when it cannot be installed on this host (its deploy then fails with one line
    and nothing of the component is changed); the role must then plan nothing more.
    """
    component = package.name
    if install.source == "offline":
        # A missing .deb stops the run before any host changes.
        deb = offline_deb(package, install, host.get_fact(DebArch))
        remote = f"{REMOTE_DEB_DIR}/{deb.name}"
        files.put(name=f"Upload {deb.name}", src=str(deb), dest=remote, mode="0644")
        apt.deb(name=f"Install {deb.name}", src=remote)
        return True

    key = checked_key()
    pinned = package.debian_version(install.version)
    already = pinned in host.get_fact(DebPackages).get(component, ())
    if not already and not host.get_fact(AptCanFetch, url=f"{GRAFANA_APT_URL}/dists/{GRAFANA_APT_SUITE}/InRelease"):
        if host.data.get("vendor_packages_optional"):
            # Lab nodes only reach Debian's mirror: plan nothing for the component, say so once.
            logger.warning(f"{host.name}: skipped {unreachable_message(package, install, host.name)}")
            return False
        server.shell(
            name=f"{component}: Grafana's apt repository is reachable",
            commands=[f"echo {shlex.quote(unreachable_message(package, install, host.name))} >&2; exit 1"],
        )
        return False

    files.directory(name="apt keyrings folder", path="/etc/apt/keyrings", mode="0755")
    keyring = files.put(name="Grafana's apt signing key", src=StringIO(key), dest=REMOTE_KEYRING, mode="0644")
    source = files.put(name="Grafana's apt source", src=StringIO(render_sources()), dest=SOURCES_FILE, mode="0644")
    if not already:
        apt.update(name=f"apt update for {component}")
    else:
        apt.update(name="apt update for the changed Grafana source", _if=any_changed(keyring, source))
    apt.packages(name=f"Install {component} {pinned}", packages=[f"{component}={pinned}"], no_recommends=True)
    return True
