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
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from io import StringIO
from typing import Literal

from pydantic import Field
from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError, StrictModel
from roles.common import REPO_ROOT, TEMPLATES_DIR, render
from roles.install import Install, install_packages

GRAFANA_APT_URL = "https://apt.grafana.com"
GRAFANA_APT_SUITE = "stable"
KEY_FILE = TEMPLATES_DIR / "grafana" / "grafana-apt-key.asc"
KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
REMOTE_KEYRING = "/etc/apt/keyrings/grafana.asc"
SOURCES_FILE = "/etc/apt/sources.list.d/grafana.sources"
# The roles whose packages come from Grafana Labs.
GRAFANA_COMPONENTS = {"grafana", "loki", "promtail", "alloy"}


class GrafanaInstall(StrictModel):
    """The `install` key of the grafana, loki, promtail and alloy group data."""

    source: Literal["grafana-apt", "offline"] = "grafana-apt"
    # The package version to pin, as apt.grafana.com names it (e.g. "11.6.0").
    version: str = Field(pattern=r"^[0-9][0-9A-Za-z.+~-]*$")
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


def unreachable_message(component: str, install: GrafanaInstall, host_name: str) -> str:
    return (
        f"{component}: source grafana-apt: {GRAFANA_APT_URL} is not reachable from {host_name}; "
        f"put Grafana's .deb files ({component}_{install.version}_<arch>.deb) in "
        f"{install.artifacts_dir}/{component}/ on the control machine and set "
        f"{component}.install.source = 'offline' in group data"
    )


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


def install_grafana_packages(component: str, packages: list[str], install: GrafanaInstall) -> bool:
    """Install a Grafana Labs component's packages at the pinned version.

    Returns False when they cannot be installed on this host (its deploy then fails with one line
    and nothing of the component is changed); the role must then plan nothing more.
    """
    if install.source == "offline":
        # A missing .deb stops the run before any host changes (roles.install.offline_debs).
        install_packages(component, packages, Install(source="offline", version=install.version,
                                                      artifacts_dir=install.artifacts_dir))
        return True

    key = checked_key()
    installed = host.get_fact(DebPackages)
    already = all(install.version in installed.get(package, ()) for package in packages)
    if not already and not host.get_fact(AptCanFetch, url=f"{GRAFANA_APT_URL}/dists/{GRAFANA_APT_SUITE}/InRelease"):
        if host.data.get("vendor_packages_optional"):
            # Lab nodes only reach Debian's mirror: plan nothing for the component, say so once.
            logger.warning(f"{host.name}: skipped {unreachable_message(component, install, host.name)}")
            return False
        server.shell(
            name=f"{component}: Grafana's apt repository is reachable",
            commands=[f"echo {shlex.quote(unreachable_message(component, install, host.name))} >&2; exit 1"],
        )
        return False

    files.directory(name="apt keyrings folder", path="/etc/apt/keyrings", mode="0755")
    keyring = files.put(name="Grafana's apt signing key", src=StringIO(key), dest=REMOTE_KEYRING, mode="0644")
    source = files.put(name="Grafana's apt source", src=StringIO(render_sources()), dest=SOURCES_FILE, mode="0644")
    if not already:
        apt.update(name=f"apt update for {component}")
    else:
        apt.update(name="apt update for the changed Grafana source", _if=any_changed(keyring, source))
    apt.packages(
        name=f"Install {component} {install.version} ({', '.join(packages)})",
        packages=[f"{package}={install.version}" for package in packages],
        no_recommends=True,
    )
    return True
