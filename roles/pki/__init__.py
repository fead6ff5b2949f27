"""The node's TLS identity: the cluster CA bundle and a certificate issued by homelab.pki at deploy time.

With `pki.tls` on (group data, one switch for the cluster), each node gets:

- CA_FILE: the cluster CA bundle (homelab.access.ca_cert_path), 0644;
- CERT_FILE and KEY_FILE: its certificate (SANs: its inventory name and its address) and key, the key
  0640 root:GROUP; services serving TLS read them as members of GROUP (their roles add them);
- EXPIRY_METRICS in node_exporter's textfile directory: the certificate's expiry and the rotation
  margin, which the CertificateExpiringSoon alert compares.

The certificate is issued again, with a fresh key, when the node has none, when it is not from the
current CA (after `homelab pki new-ca`), when the node's name or address changed, or when it expires
within `rotation_margin`. Otherwise a deploy changes nothing here.

With `pki.tls` off, ``remove_when_off`` (run by deploys/all.py after every role, once no service
uses them any more) removes TLS_DIR (the key, the certificates, the web configs with their password
hashes), the expiry metrics (else CertificateExpiringSoon would fire for a certificate nothing
serves) and GROUP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from io import BytesIO

from pydantic import model_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from homelab.config import FieldError, StrictModel
from homelab.types import Duration, seconds
from roles.common import current_topology, role_settings

TLS_DIR = "/etc/homelab/tls"
CA_FILE = f"{TLS_DIR}/ca.crt"
CERT_FILE = f"{TLS_DIR}/node.crt"
KEY_FILE = f"{TLS_DIR}/node.key"
GROUP = "homelab-tls"


@dataclass(frozen=True)
class TlsFile:
    """A file of the node's TLS identity, owned by root and ``group`` with ``mode`` (as apply writes it)."""

    path: str
    group: str
    mode: str

    @property
    def owner(self) -> str:
        return f"root:{self.group}"


CA_BUNDLE = TlsFile(CA_FILE, "root", "0644")
NODE_CERT = TlsFile(CERT_FILE, "root", "0644")
NODE_KEY = TlsFile(KEY_FILE, GROUP, "0640")
# What a backup keeps (homelab.backup.parts.Certificates); the web configs beside them are the roles'.
IDENTITY = (CA_BUNDLE, NODE_CERT, NODE_KEY)
EXPIRY_METRICS = "homelab_tls.prom"
# A new certificate and key are written beside the live ones with this suffix first.
STAGED = ".new"
# Host name -> the operations of this run that write its certificate and key (apply), for a service
# that reads them only at start to reload after them (certificate_written).
_PAIR_WRITES: dict[str, tuple] = {}


class Settings(StrictModel):
    """Group data key `pki`; set it in inventory/group_data/all.py so the whole cluster agrees."""

    # Whether this host's listeners that support it (homelab.topology.Listener.secured) serve TLS
    # with the node's certificate and ask for a login (homelab.access).
    tls: bool = False
    # Node certificates: how long each is valid, and how long before expiry a deploy replaces it.
    cert_lifetime: Duration = "90d"
    rotation_margin: Duration = "30d"
    # The CA `homelab pki init` / `new-ca` create.
    ca_lifetime: Duration = "3650d"
    ca_name: str = "homelab cluster CA"

    @model_validator(mode="after")
    def _margin_inside_lifetime(self) -> "Settings":
        if seconds(self.rotation_margin) >= seconds(self.cert_lifetime):
            raise FieldError("rotation_margin", f"expected shorter than cert_lifetime ({self.cert_lifetime}), "
                                                f"got {self.rotation_margin}")
        return self


def lifetime(duration: str) -> timedelta:
    return timedelta(seconds=seconds(duration))


def expiry_metrics(not_after_s: float, margin_s: float) -> str:
    """The certificate's expiry and the margin, under the names CertificateExpiringSoon reads."""
    from homelab.alerts.catalog import CERT_EXPIRY, CERT_ROTATION_MARGIN

    return (
        f"# HELP {CERT_EXPIRY} When the node's certificate expires.\n"
        f"# TYPE {CERT_EXPIRY} gauge\n"
        f'{CERT_EXPIRY}{{file="{CERT_FILE}"}} {not_after_s:.0f}\n'
        f"# HELP {CERT_ROTATION_MARGIN} How long before expiry a deploy replaces it.\n"
        f"# TYPE {CERT_ROTATION_MARGIN} gauge\n"
        f"{CERT_ROTATION_MARGIN} {margin_s:.0f}\n"
    )


@deploy("pki")
def apply() -> None:
    from homelab.access import ca_cert_path
    from homelab.pki import load_ca, not_after
    from roles.secrets import private_file

    settings = role_settings("pki", Settings)
    _PAIR_WRITES.pop(host.name, None)
    if not settings.tls:
        return
    topology = current_topology()
    ca = load_ca(host.data.get("vault_file"), host.data.get("vault_password_file"))
    server.group(name=f"Group {GROUP} (reads the node's TLS key)", group=GROUP, system=True)
    files.directory(name=f"TLS folder {TLS_DIR}", path=TLS_DIR, user="root", group="root", mode="0755")
    files.put(name=f"Cluster CA bundle {CA_FILE}", src=BytesIO(ca_cert_path(host.data.get("vault_file")).read_bytes()),
              dest=CA_FILE, user="root", group=CA_BUNDLE.group, mode=CA_BUNDLE.mode)

    current = host.get_fact(FileContents, path=CERT_FILE)
    cert_pem = ("\n".join(current) + "\n").encode() if current else None
    margin = lifetime(settings.rotation_margin)
    reason = ca.renewal_reason(cert_pem, host.name, topology.address(host.name), margin)
    if reason:
        issued = ca.issue(host.name, topology.address(host.name), lifetime(settings.cert_lifetime))
        # No service restarts for it: exporter-toolkit rereads both files per handshake, toy-redis
        # and the relay when they changed (their ReloadingContext), nginx reloads (certificate_written),
        # so a rotation misses no scrape. Both files are staged, then renamed into place in one
        # command: a client presenting the pair (Prometheus, blackbox: Listener.client_cert) rereads
        # it when either changes, and between two operations would find a new key beside the old
        # certificate and fail its scrape.
        staged_key = private_file(name=f"Node TLS key {KEY_FILE}{STAGED} (new certificate: {reason})",
                                  dest=KEY_FILE + STAGED, content=BytesIO(issued.key), group=NODE_KEY.group,
                                  mode=NODE_KEY.mode)
        staged_cert = files.put(name=f"Node certificate {CERT_FILE}{STAGED} ({reason})", src=BytesIO(issued.cert),
                                dest=CERT_FILE + STAGED, user="root", group=NODE_CERT.group, mode=NODE_CERT.mode)
        moved = server.shell(name=f"Node certificate {CERT_FILE} and key in place ({reason})",
                             commands=[f"mv -f {KEY_FILE}{STAGED} {KEY_FILE} && mv -f {CERT_FILE}{STAGED} {CERT_FILE}"])
        _PAIR_WRITES[host.name] = (staged_key, staged_cert, moved)
        cert_pem = issued.cert
    else:
        # Keep the key's owner and mode right even when the certificate stays.
        files.file(name=f"Node TLS key {KEY_FILE}", path=KEY_FILE, user="root", group=NODE_KEY.group,
                   mode=NODE_KEY.mode)
    textfiles = topology.settings(host.name, "node_exporter").textfile_directory
    # Before node_exporter's package creates it: node_exporter only reads it.
    files.directory(name=f"node_exporter textfile folder {textfiles}", path=textfiles)
    files.put(name=f"Certificate expiry for node_exporter ({EXPIRY_METRICS})",
              src=BytesIO(expiry_metrics(not_after(cert_pem).timestamp(), margin.total_seconds()).encode()),
              dest=f"{textfiles}/{EXPIRY_METRICS}", user="root", group="root", mode="0644")


def certificate_written() -> tuple:
    """The operations by which this run gives this host a new certificate and key (none when it
    keeps them): for ``_if=any_changed(...)`` of a reload by a role applied after pki's."""
    return _PAIR_WRITES.get(host.name, ())


@deploy("pki: nothing left with TLS off")
def remove_when_off() -> None:
    """With pki.tls off: what apply and the web configs put on the node goes, the private key first
    of all. Run after the services are reconfigured without TLS, which reread these files until then."""
    if role_settings("pki", Settings).tls:
        return
    textfiles = current_topology().settings(host.name, "node_exporter").textfile_directory
    files.directory(name=f"No TLS folder {TLS_DIR} with pki.tls off (node key, certificates, web configs)",
                    path=TLS_DIR, present=False)
    files.file(name=f"No certificate expiry for node_exporter ({EXPIRY_METRICS}) with pki.tls off",
               path=f"{textfiles}/{EXPIRY_METRICS}", present=False)
    server.group(name=f"No group {GROUP} with pki.tls off", group=GROUP, present=False)
