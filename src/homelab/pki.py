"""The cluster's certificate authority, on the control machine: created once, issuing node certificates.

The CA's private key lives only in the cluster's vault (secret CA_KEY_SECRET), never in plain text
and never on a node; its certificate is public and committed beside the vault
(homelab.access.ca_cert_path: secrets/lab.ca.crt for secrets/lab.vault.yml). That file is a bundle:
the current CA first, then a replaced one while its node certificates are being reissued.

    homelab pki init       # once per cluster: the CA, and a web password per user (homelab.access)
    deploy                 # roles/pki issues each node a certificate (its name and address as SANs)
                           # when it has none, it is not from the current CA, its names changed, or
                           # it is within pki.rotation_margin of expiring
    homelab pki new-ca     # a new CA: the old one stays trusted in the bundle; deploy reissues all
    homelab pki drop-old-ca   # once every node has its new certificate: trust only the new CA

Keys are ECDSA P-256: small, fast handshakes, and supported by Go's crypto/tls (exporter-toolkit),
Python's ssl and curl alike.
"""

from __future__ import annotations

import ipaddress
import secrets as _random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homelab.config import ConfigError
from homelab.vault import load_vault, repo_path, store_secrets

CA_KEY_SECRET = "cluster_ca_key"
# A certificate is valid from a little before it is issued: nodes' clocks may lag the control machine's.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes = b""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(name: str, lifetime: timedelta, now: datetime | None = None) -> Issued:
    """A self-signed CA certificate, allowed to sign only end-entity certificates."""
    now = now or datetime.now(timezone.utc)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def subject_alt_names(name: str, address: str) -> list[x509.GeneralName]:
    """The node's name and its address (an IP address SAN when it is one, else a DNS name)."""
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        if address != name:
            names.append(x509.DNSName(address))
    return names


class ClusterCA:
    """The CA that signs node certificates: its certificate and key."""

    def __init__(self, ca: Issued):
        self.cert = x509.load_pem_x509_certificate(ca.cert)
        self._key = serialization.load_pem_private_key(ca.key, password=None)

    def issue(self, name: str, address: str, lifetime: timedelta, now: datetime | None = None) -> Issued:
        """A server and client certificate for node ``name`` at ``address``, with a fresh key."""
        return self._issue(name, lifetime, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                           x509.SubjectAlternativeName(subject_alt_names(name, address)), now)

    def issue_client(self, name: str, lifetime: timedelta, now: datetime | None = None) -> Issued:
        """A client-only certificate (CN ``name``, no SANs: it serves nothing) with a fresh key, for a
        caller that is no node: the control machine (homelab.access)."""
        return self._issue(name, lifetime, [ExtendedKeyUsageOID.CLIENT_AUTH], None, now)

    def _issue(self, name: str, lifetime: timedelta, usages: list, sans: x509.SubjectAlternativeName | None,
               now: datetime | None) -> Issued:
        now = now or datetime.now(timezone.utc)
        key = _new_key()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + lifetime)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),
                                  critical=False))
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        return Issued(builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def renewal_reason(self, cert_pem: bytes | None, name: str, address: str, margin: timedelta,
                       now: datetime | None = None) -> str | None:
        """Why a node's current certificate must be replaced, or None when it can stay."""
        now = now or datetime.now(timezone.utc)
        if not cert_pem:
            return "none yet"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            return "unreadable"
        if cert.issuer != self.cert.subject or not _signed_by(cert, self.cert):
            return "not from the current CA"
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return "no names"
        if set(sans) != set(subject_alt_names(name, address)):
            return "names changed"
        if cert.not_valid_after_utc - margin <= now:
            return "within the rotation margin"
        return None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    return True


def not_after(cert_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


# --- the CA's files: certificate bundle beside the vault, key in it ------------------------------

def _bundle(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        return []
    except ValueError:
        raise ConfigError(path, "", "expected PEM certificates (the cluster CA bundle)") from None


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_ca(vault_file: str | Path, password_file: str | Path) -> ClusterCA:
    """The current CA: the bundle's first certificate and the vault's key, which must match."""
    from homelab.access import ca_cert_path

    bundle_path = ca_cert_path(vault_file)
    bundle = _bundle(bundle_path)
    if not bundle:
        raise ConfigError(bundle_path, "", "the cluster CA certificate is missing (create it: homelab pki init)")
    key = load_vault(vault_file, password_file).get(CA_KEY_SECRET)
    if key is None:
        raise ConfigError(repo_path(vault_file), CA_KEY_SECRET, "the CA key is missing from the vault (homelab pki init "
                                                                  "creates a CA; homelab pki new-ca replaces one)")
    ca = ClusterCA(Issued(bundle[0].public_bytes(serialization.Encoding.PEM), key.encode()))
    if ca._key.public_key() != bundle[0].public_key():
        raise ConfigError(bundle_path, "", f"the first certificate does not match the vault's {CA_KEY_SECRET}")
    return ca


def init(vault_file: str | Path, password_file: str | Path, users: list[str], ca_name: str,
         ca_lifetime: timedelta) -> list[str]:
    """Create what is missing: the CA (key into the vault, certificate beside it) and a random web
    password for each of ``users``. Never replaces anything; returns what it created."""
    from homelab.access import ca_cert_path, password_secret

    existing = load_vault(vault_file, password_file)
    updates = {password_secret(user): _random.token_urlsafe(24) for user in users if password_secret(user) not in existing}
    created = sorted(updates)
    bundle_path = ca_cert_path(vault_file)
    if CA_KEY_SECRET not in existing:
        if _bundle(bundle_path):
            raise ConfigError(bundle_path, "", f"exists but the vault has no {CA_KEY_SECRET}; restore the vault, "
                                               "or start over with homelab pki new-ca")
        ca = create_ca(ca_name, ca_lifetime)
        updates[CA_KEY_SECRET] = ca.key.decode()
        created.append(CA_KEY_SECRET)
    if updates:
        store_secrets(vault_file, password_file, updates)
    if CA_KEY_SECRET in updates:
        bundle_path.write_bytes(ca.cert)
        created.append(str(bundle_path))
    return created


def new_ca(vault_file: str | Path, password_file: str | Path, ca_name: str, ca_lifetime: timedelta) -> Path:
    """Replace the CA: a new key in the vault, the new certificate first in the bundle and the old
    one kept after it, so nodes' current certificates stay trusted until the deploy reissues them."""
    from homelab.access import ca_cert_path

    bundle_path = ca_cert_path(vault_file)
    old = _bundle(bundle_path)[:1]
    ca = create_ca(ca_name, ca_lifetime)
    store_secrets(vault_file, password_file, {CA_KEY_SECRET: ca.key.decode()})
    bundle_path.write_bytes(ca.cert + _pem(old))
    return bundle_path


def drop_old_ca(vault_file: str | Path) -> int:
    """Trust only the current CA (the bundle's first certificate); how many certificates were dropped."""
    from homelab.access import ca_cert_path

    bundle_path = ca_cert_path(vault_file)
    bundle = _bundle(bundle_path)
    if not bundle:
        raise ConfigError(bundle_path, "", "the cluster CA certificate is missing (create it: homelab pki init)")
    bundle_path.write_bytes(_pem(bundle[:1]))
    return len(bundle) - 1
