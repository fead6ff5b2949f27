"""TLS and logins for the Prometheus-family services, with exporter-toolkit's `--web.config.file`.

A role whose listener is secured (homelab.topology.Listener.secured) calls, after installing its
package, ``web_config(role, service_user)``: with `pki.tls` on, it writes WEB_CONFIG_DIR/<role>.yml
(the node's certificate and key, and a bcrypt hash of the web password of each user the topology
says calls the role, homelab.access.callers) and returns the flag naming it, to add to the
service's flags. exporter-toolkit reads that file on every request, so a new password or
certificate applies without a restart.

The other side, ``client(topology, role, listener, caller)``: what a service on a node (Prometheus
scraping, blackbox probing, Grafana querying) needs to reach a listener: scheme, the CA file on the
node, its user name and the file holding its password (written by ``password_file``), or the node's
own certificate and key for a listener admitting callers by certificate (Listener.client_cert).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import bcrypt
from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import server

from homelab.access import callers, password_secret
from homelab.config import ConfigError
from homelab.pki import CA_KEY_SECRET
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.vault import host_secret
from roles.common import current_topology, render, sha1
from roles.pki import CA_FILE, CERT_FILE, GROUP, KEY_FILE, TLS_DIR

WEB_CONFIG_DIR = TLS_DIR
# exporter-toolkit caches a successful check, so the cost is paid once per login, not per scrape.
BCRYPT_COST = 10
_BCRYPT_ALPHABET = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                                   b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def salt_key(ca_key: str) -> bytes:
    """The key of the web config salts, derived (with a label of its own) from the cluster CA's key,
    which only the control machine holds: without it nobody can work out a salt."""
    return hmac.new(ca_key.encode(), b"homelab web config bcrypt salts", hashlib.sha256).digest()


def bcrypt_salt(user: str, password: str, key: bytes) -> bytes:
    """bcrypt's salt setting for ``user``'s ``password``: an HMAC of both keyed by ``key`` (salt_key),
    so the hash is the same on every deploy (a rerun changes nothing), while whoever reads it on a node
    cannot recompute the salt from a guessed password, and so pays bcrypt's cost for every guess."""
    digest = hmac.new(key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
    return f"$2b${BCRYPT_COST:02d}$".encode() + base64.b64encode(digest[:16]).rstrip(b"=").translate(_BCRYPT_ALPHABET)


# Hashes made before, on this control machine: bcrypt at BCRYPT_COST costs most of a tenth of a
# second each, and a no-op rerun would otherwise pay it again for every login. It holds only
# hashes the nodes hold in their web configs already, looked up by their salt, which only the CA
# key and the password give (a changed password or a new CA finds nothing and hashes anew).
HASH_CACHE_ENTRIES = 256


def hash_cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "homelab-ops" / "bcrypt-hashes"


@lru_cache(maxsize=64)
def bcrypt_hash(user: str, password: str, key: bytes) -> str:
    """``password``'s bcrypt hash for ``user``, salted by bcrypt_salt; made once per control machine
    (hash_cache_file), not once per run."""
    salt = bcrypt_salt(user, password, key).decode()
    cache = hash_cache_file()
    try:
        known = cache.read_text(errors="replace").split()
    except OSError:
        known = []
    remembered = next((hashed for hashed in known if hashed.startswith(salt) and len(hashed) == 60), None)
    if remembered:
        return remembered
    hashed = bcrypt.hashpw(password.encode(), salt.encode()).decode()
    cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole and renamed into place: a concurrent deploy reads the old list or the new one.
    with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False) as staged:  # mode 0600
        staged.write("".join(f"{line}\n" for line in [hashed, *known][:HASH_CACHE_ENTRIES]))
    Path(staged.name).replace(cache)
    return hashed


def login_hash(user: str) -> str:
    """In a role's apply: the bcrypt hash of ``user``'s web password, from this host's vault."""
    return bcrypt_hash(user, host_secret(password_secret(user)), salt_key(host_secret(CA_KEY_SECRET)))


def render_web_config(users: dict[str, str]) -> str:
    """exporter-toolkit's web config: TLS with the node's certificate, ``users`` (name -> bcrypt hash)."""
    return render("pki/web-config.yml.j2", cert_file=CERT_FILE, key_file=KEY_FILE, users=users)


@lru_cache(maxsize=1)
def _throwaway_pair():
    """A certificate and key for promtool to load: made once per run, not per check."""
    from homelab.pki import ClusterCA, create_ca

    return ClusterCA(create_ca("web config check", timedelta(hours=1))).issue("check", "127.0.0.1", timedelta(hours=1))


# A run checks each distinct text once (a role's web config is the same on all its hosts); a
# failure is not kept, so it is reported on each host that would get it.
@lru_cache(maxsize=64)
def check_web_config(text: str) -> None:
    """`promtool check web-config` on the control machine (nodes other than Prometheus's have no
    promtool), with the certificate paths pointed at a throwaway pair: it loads them."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise ConfigError("promtool", "", "not found on the control machine (apt-get install prometheus; "
                                          "./dev setup does it): it checks web configs before they are sent")
    pair = _throwaway_pair()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "node.crt").write_bytes(pair.cert)
        (folder / "node.key").write_bytes(pair.key)
        config = folder / "web.yml"
        config.write_text(text.replace(CERT_FILE, str(folder / "node.crt")).replace(KEY_FILE, str(folder / "node.key")))
        result = subprocess.run([promtool, "check", "web-config", str(config)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError("templates/pki/web-config.yml.j2", "", f"promtool check web-config failed: "
                                                                 f"{' '.join(result.stderr.split())[-300:]}")


def _web_listener(role: str) -> str:
    """The name of ``role``'s listener that asks for the web login of its web config."""
    return next(listener.name for listener in ROLE_BY_NAME[role].listeners if listener.web_login)


def check_profiles_behind_a_login(role: str, profiling_hz: int) -> None:
    """Our services serve CPU profiles (profiling_hz) only behind the login of their web config,
    which this host has only with pki.tls on: refuse the setting otherwise, before anything changes
    (the service's own config check would refuse it on the node)."""
    web = _web_listener(role)
    if profiling_hz and not current_topology().serves_tls(host.name, role, web):
        raise ConfigError(f"inventory data for {host.name}", f"{role}.profiling_hz",
                          f"expected 0 with pki.tls off (CPU profiles are served only behind the metrics login, "
                          f"which comes with pki.tls), got {profiling_hz}")


def web_config(role: str, service_user: str) -> list[str]:
    """In ``role``'s apply on this host: its web config when pki.tls is on; the flags to add.
    exporter-toolkit rereads the file and the certificate per request: no restart needed."""
    written = web_config_file(role, service_user)
    return [f"--web.config.file={written.path}"] if written else []


@operation()
def checked_web_config(dest: str, content: BytesIO, group: str):
    """Ensure ``dest`` holds the web config ``content``, 0640 root:``group``; when it must change,
    promtool checks it first (as roles.common.checked_file does with a node's checker): a config that
    fails is never sent, and one the node already holds is not checked again.

    + dest: the live path the service reads
    + content: the rendered web config, in a BytesIO so that no argument or log line shows its hashes
    + group: the service's group, which reads it
    """
    from roles.secrets import private_file

    data = content.getvalue()
    if host.get_fact(Sha1File, path=dest) != sha1(data):
        check_web_config(data.decode())
    yield from private_file._inner(dest=dest, content=BytesIO(data), group=group, mode="0640")


@dataclass(frozen=True)
class WrittenWebConfig:
    path: str
    # What a service reading the file's logins only at start restarts for (the certificate it
    # reloads when its files change: toy-redis's and the relay's ReloadingContext).
    changes: tuple


def web_config_file(role: str, service_user: str) -> WrittenWebConfig | None:
    """In ``role``'s apply on this host: write its web config when pki.tls is on (``service_user``
    joins GROUP to read the node's key); None with TLS off. Our own services (the relay,
    toy-redis) read the same file as exporter-toolkit does."""
    topology = current_topology()
    web = _web_listener(role)
    if not topology.serves_tls(host.name, role, web):
        return None
    text = render_web_config({user: login_hash(user) for user in callers(topology, role)})
    path = f"{WEB_CONFIG_DIR}/{role}.yml"
    # Only the group: server.user otherwise makes the user's home exist and owns it to the user, and
    # our services share the home /nonexistent, so two on one node took it from each other each run.
    server.user(name=f"{service_user} reads the node's TLS key (group {GROUP})", user=service_user,
                groups=[GROUP], append=True, ensure_home=False)
    written = checked_web_config(name=f"{role} web config {path} (TLS, logins)", dest=path,
                                 content=BytesIO(text.encode()), group=service_user)
    return WrittenWebConfig(path, (written,))


@dataclass(frozen=True)
class Client:
    """How a service on a node reaches a listener: for its scrape, probe or datasource config."""

    scheme: str
    ca_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    # The node's own certificate and key, presented to a listener admitting callers by certificate.
    cert_file: str | None = None
    key_file: str | None = None


def client(topology: Topology, role: str, host_name: str, listener: str, caller: str, password_file: str) -> Client:
    """``caller``'s way to ``role``'s ``listener`` on ``host_name``; its password is in ``password_file``."""
    if not topology.serves_tls(host_name, role, listener):
        return Client("http")
    if ROLE_BY_NAME[role].listener(listener).client_cert:
        return Client("https", CA_FILE, cert_file=CERT_FILE, key_file=KEY_FILE)
    if not ROLE_BY_NAME[role].listener(listener).login:
        return Client("https", CA_FILE)
    return Client("https", CA_FILE, caller, password_file)


def password_file(user: str, dest: str, group: str):
    """Write ``user``'s web password (from the vault) to ``dest``, 0640 root:``group``."""
    from roles.secrets import secret_file

    return secret_file(name=f"{user}'s web password {dest}", dest=dest, secret=password_secret(user), group=group,
                       mode="0640")
