"""How the control machine reaches a service on a node: its URL, the CA to verify it with, the login.

Everything on the control machine that talks to a node's HTTP service (the `homelab` CLI, the lab
tests, benches) goes through here, so that the scheme, the CA and the credentials are decided in
one place and nothing else writes ``http://`` or a password by hand:

    access = topology.access("prometheus")                          # the first host serving it
    access = topology.access("toy_redis", "worker-node-12", "metrics")
    access.url("/api/v1/query")    # "http://10.77.0.14:<its port>/api/v1/query"; https:// with TLS on
    access.get("/api/v1/query", params={"query": "up"})   # requests, with CA and login applied
    access.request("POST", "/api/v2/silences", json=...)
    with access.session() as session: session.get(access.url("/metrics"))
    access.verify                  # requests' verify=: the cluster CA's file, or True (system CAs)
    access.auth                    # (user, password) from the vault, or None when no login is asked
    access.client_cert             # requests' cert=: the control machine's certificate and key files
    access.ssl_context()           # for clients that are not requests (redis-py, asyncio, urllib)

A listener serves TLS and asks for a login when the serving host's `pki.tls` is on and the
listener supports it (``Listener.secured`` in homelab.topology). The CA certificate is public and
committed next to the cluster's vault (``secrets/<cluster>.ca.crt`` beside
``secrets/<cluster>.vault.yml``); its key is in that vault (homelab.pki). The control machine logs
in as OPERATOR, with the vault's ``web_password_operator``. A listener admitting its callers by
certificate (``Listener.client_cert``: what nginx fronts) gets the control machine's own, CN
CONTROL_CERT_NAME, issued by the cluster CA for this process only (control_certificate).
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab.config import ConfigError
from homelab.vault import load_vault, repo_path

if TYPE_CHECKING:
    import requests

    from homelab.topology import Endpoint, Topology

# The user the control machine (operators, the CLI, tests) logs in as.
OPERATOR = "operator"
# Every request from the control machine; a healthy service answers in milliseconds.
HTTP_TIMEOUT_S = 10
# The control machine's certificate name: not a host name (it has spaces), so no node's own
# certificate (CN = its inventory name) can pass for it.
CONTROL_CERT_NAME = "homelab control machine"
# How long the certificate control_certificate issues is valid: a CLI run or a test session.
CONTROL_CERT_LIFETIME = timedelta(hours=12)


def password_secret(user: str) -> str:
    """The vault name holding ``user``'s web password, e.g. ``web_password_prometheus``."""
    return f"web_password_{user}"


def ca_cert_path(vault_file: str | Path) -> Path:
    """The cluster CA certificate beside its vault: secrets/lab.vault.yml -> secrets/lab.ca.crt."""
    vault = repo_path(vault_file)
    return vault.with_name(vault.name.split(".vault", 1)[0] + ".ca.crt")


@dataclass(frozen=True)
class Access:
    """One listener of one host, as the control machine reaches it."""

    endpoint: Endpoint
    tls: bool
    # The cluster CA certificate to verify the service with (None without TLS).
    ca_file: Path | None = None
    # (user, password), or None when the listener asks for no login; never shown in repr.
    auth: tuple[str, str] | None = field(default=None, repr=False)
    # (certificate file, key file) the control machine presents, for a Listener.client_cert.
    client_cert: tuple[Path, Path] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, path: str = "") -> str:
        return self.endpoint.url(path, scheme=self.scheme)

    @property
    def verify(self) -> str | bool:
        """requests' ``verify=``: the cluster CA only, when there is one."""
        return str(self.ca_file) if self.ca_file else True

    def session(self) -> requests.Session:
        """A requests session verifying with the cluster CA and logging in (use it as a context manager)."""
        import requests  # here: every deploy imports this module, few of them make a request

        session = requests.Session()
        # Otherwise REQUESTS_CA_BUNDLE (or ~/.netrc) would override the session's CA (and login):
        # requests lets the environment win over session settings (psf/requests#3829).
        session.trust_env = False
        session.verify = self.verify
        session.auth = self.auth
        session.cert = tuple(map(str, self.client_cert)) if self.client_cert else None
        return session

    def request(self, method: str, path: str = "", **kwargs: Any) -> requests.Response:
        """One request to ``path`` (timeout HTTP_TIMEOUT_S unless given); raises requests' errors."""
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        with self.session() as session:
            return session.request(method, self.url(path), **kwargs)

    def get(self, path: str = "", **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def redis(self, **kwargs: Any):
        """A redis-py client of this RESP listener (toy-redis), over TLS verifying with the cluster
        CA when it serves TLS; the password is the caller's to pass (``password=``)."""
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return redis.Redis(host=self.endpoint.address, port=self.endpoint.port, **tls, **kwargs)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting only the cluster CA (None without TLS)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_cert:
            context.load_cert_chain(*map(str, self.client_cert))
        return context


def access(topology: Topology, role: str, host: str | None = None, listener: str = "http",
           user: str = OPERATOR) -> Access:
    """How ``user`` (default: the control machine) reaches ``role``'s ``listener`` on ``host``."""
    from homelab.topology import ROLE_BY_NAME

    endpoint = topology.endpoint(role, host, listener)
    secured = topology.serves_tls(endpoint.host, role, listener)
    if not secured:
        return Access(endpoint, tls=False)
    vault_file = topology.data(endpoint.host, "vault_file")
    password_file = topology.data(endpoint.host, "vault_password_file")
    where = f"inventory data for {endpoint.host}"
    if not vault_file or not password_file:
        raise ConfigError(where, "vault_file" if not vault_file else "vault_password_file",
                          "required when pki.tls is on (the CA and the web passwords are in the vault)")
    ca_file = ca_cert_path(vault_file)
    if not ca_file.is_file():
        raise ConfigError(ca_file, "", "the cluster CA certificate is missing (create it: homelab pki init)")
    spec = ROLE_BY_NAME[role].listener(listener)
    if spec.client_cert:
        return Access(endpoint, tls=True, ca_file=ca_file, client_cert=control_certificate(vault_file, password_file))
    if not spec.web_login:
        # TLS only: the protocol's own login (toy-redis's requirepass), or the application's
        # (Grafana behind nginx), is the client's to send.
        return Access(endpoint, tls=True, ca_file=ca_file)
    secrets = load_vault(vault_file, password_file)
    name = password_secret(user)
    if name not in secrets:
        raise ConfigError(repo_path(vault_file), name, "secret is missing from the vault (add it with ansible-vault edit)")
    return Access(endpoint, tls=True, ca_file=ca_file, auth=(user, secrets[name]))


@lru_cache(maxsize=4)
def control_certificate(vault_file: str | Path, password_file: str | Path) -> tuple[Path, Path]:
    """The control machine's client certificate (CN CONTROL_CERT_NAME) from the cluster CA, issued
    once per process into a private folder (0700, the key 0600) removed at exit."""
    from homelab.pki import load_ca

    issued = load_ca(vault_file, password_file).issue_client(CONTROL_CERT_NAME, CONTROL_CERT_LIFETIME)
    folder = Path(tempfile.mkdtemp(prefix="homelab-control-cert-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    cert, key = folder / "control.crt", folder / "control.key"
    key.touch(mode=0o600)
    key.write_bytes(issued.key)
    cert.write_bytes(issued.cert)
    return cert, key


def certificate_names(topology: Topology, host: str, role: str, listener: str) -> list[str]:
    """The certificate names (CNs) a Listener.client_cert of ``role`` on ``host`` admits: each host
    the topology says calls it (its node certificate's CN is its inventory name) and, when the
    control machine calls it, CONTROL_CERT_NAME."""
    from homelab.topology import CONTROL

    [inbound] = [inbound for inbound in topology.inbound(host) if (inbound.role, inbound.listener) == (role, listener)]
    return sorted({*inbound.callers, *([CONTROL_CERT_NAME] if CONTROL in inbound.parties else [])})


def callers(topology: Topology, role: str) -> list[str]:
    """The users ``role``'s secured listeners admit: each role the topology says connects to it
    (Prometheus scraping, blackbox probing, Grafana querying...) logs in under its own name, and
    the control machine as OPERATOR."""
    return sorted({OPERATOR, *(connection.source for connection in topology.flows()
                               if connection.target == role and connection.source_host is not None)})


def web_users(topology: Topology) -> list[str]:
    """Every user some secured listener admits: the web passwords the vault must hold."""
    from homelab.topology import ROLES

    return sorted({user for role in ROLES if any(listener.secured and listener.login for listener in role.listeners)
                   if topology.hosts_of(role.name) for user in callers(topology, role.name)})
