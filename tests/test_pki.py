"""homelab.pki: the cluster CA in the vault, node certificates a TLS client accepts, rotation, a new CA."""

from __future__ import annotations

import base64
import ssl
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from homelab import pki
from homelab.access import OPERATOR, ca_cert_path, password_secret
from homelab.cli import main
from homelab.config import ConfigError
from homelab.topology import Topology
from homelab.vault import load_vault
from roles.pki import Settings as PkiSettings
from roles.pki import lifetime
from tests.test_vault import encrypt

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture
def vault(tmp_path) -> tuple[Path, Path]:
    """An empty cluster vault (one unrelated secret) and its password file, named like the repo's."""
    vault_file, password_file = encrypt(tmp_path, 'slack_bot_token: "xoxb-keep-me"\n')
    named = vault_file.with_name("cluster.vault.yml")
    vault_file.rename(named)
    return named, password_file


def inventory(tmp_path: Path, vault_file: Path, password_file: Path, extra: str = "") -> Path:
    """A one-host cluster (Prometheus on 127.0.0.1) with TLS on, and ``extra`` host data items."""
    (tmp_path / "group_data").mkdir(exist_ok=True)
    data = (f'"ssh_hostname": "127.0.0.1", "vault_file": "{vault_file}", "vault_password_file": "{password_file}", '
            f'"pki": {{"tls": True}}, {extra}')
    path = tmp_path / "hosts.py"
    path.write_text(f'prometheus = [("worker-node-14", {{{data}}})]\n')
    return path


def test_init_keeps_the_ca_key_only_encrypted_in_the_vault_and_the_certificate_beside_it(tmp_path, vault, capsys):
    vault_file, password_file = vault
    assert main(["pki", "init", "--inventory", str(inventory(tmp_path, *vault))]) == 0
    secrets = load_vault(vault_file, password_file)
    assert secrets["slack_bot_token"] == "xoxb-keep-me"
    key = secrets[pki.CA_KEY_SECRET]
    assert key.startswith("-----BEGIN PRIVATE KEY-----")
    assert key.encode() not in vault_file.read_bytes() and b"PRIVATE KEY" not in vault_file.read_bytes()
    # Every user some endpoint admits has a password: the control machine, Prometheus, blackbox...
    assert {password_secret(OPERATOR), password_secret("prometheus")} <= set(secrets)
    ca = pki.load_ca(vault_file, password_file)
    assert ca.cert.subject.rfc4514_string() == f"CN={PkiSettings().ca_name}"
    assert b"PRIVATE" not in ca_cert_path(vault_file).read_bytes()
    # A second init replaces nothing.
    capsys.readouterr()
    assert main(["pki", "init", "--inventory", str(inventory(tmp_path, *vault))]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert load_vault(vault_file, password_file) == secrets


@pytest.fixture
def ca(vault) -> pki.ClusterCA:
    pki.init(*vault, [OPERATOR], "test CA", lifetime("3650d"))
    return pki.load_ca(*vault)


def serve_tls(issued: pki.Issued, tmp_path: Path, password: str) -> ThreadingHTTPServer:
    """An HTTPS server on 127.0.0.1 with ``issued`` as its certificate, asking for basic auth as
    exporter-toolkit does (401 with WWW-Authenticate without the right login)."""
    (tmp_path / "node.crt").write_bytes(issued.cert)
    (tmp_path / "node.key").write_bytes(issued.key)
    expected = "Basic " + base64.b64encode(f"{OPERATOR}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            if not ok:
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.end_headers()
            self.wfile.write(b"data\n" if ok else b"Unauthorized\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "node.crt", tmp_path / "node.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_node_certificate_is_accepted_with_the_cluster_ca_and_refused_with_another(ca, vault, tmp_path):
    server = serve_tls(ca.issue("worker-node-14", "127.0.0.1", DAY), tmp_path, "pw")
    url = f"https://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        assert requests.get(url, verify=str(ca_cert_path(vault[0])), auth=(OPERATOR, "pw"), timeout=5).text == "data\n"
        assert requests.get(url, verify=str(ca_cert_path(vault[0])), timeout=5).status_code == 401
        other = tmp_path / "other-ca.crt"
        other.write_bytes(pki.create_ca("another CA", DAY).cert)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(other), auth=(OPERATOR, "pw"), timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_the_access_helper_reaches_a_tls_service_with_the_ca_and_the_vaults_login(ca, vault, tmp_path):
    """What the CLI and the lab tests do with TLS on: https, the cluster CA, the operator's password."""
    vault_file, password_file = vault
    password = load_vault(vault_file, password_file)[password_secret(OPERATOR)]
    server = serve_tls(ca.issue("worker-node-14", "127.0.0.1", DAY), tmp_path, password)
    try:
        path = inventory(tmp_path, vault_file, password_file, f'"prometheus": {{"listen_port": {server.server_address[1]}}}')
        access = Topology.load(path).access("prometheus")
        assert access.url().startswith("https://127.0.0.1:")
        assert access.get("/api/v1/query").text == "data\n"
    finally:
        server.shutdown()
        server.server_close()


def test_an_expired_certificate_is_refused(ca, vault, tmp_path):
    server = serve_tls(ca.issue("worker-node-14", "127.0.0.1", timedelta(minutes=1), now=NOW - DAY), tmp_path, "pw")
    try:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{server.server_address[1]}/", verify=str(ca_cert_path(vault[0])), timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_certificate_is_renewed_only_when_missing_foreign_renamed_or_within_the_margin(ca):
    margin = timedelta(days=30)
    fresh = ca.issue("worker-node-12", "10.77.0.12", timedelta(days=90)).cert
    assert ca.renewal_reason(fresh, "worker-node-12", "10.77.0.12", margin) is None
    assert ca.renewal_reason(None, "worker-node-12", "10.77.0.12", margin) == "none yet"
    assert ca.renewal_reason(b"garbage", "worker-node-12", "10.77.0.12", margin) == "unreadable"
    assert ca.renewal_reason(fresh, "worker-node-12", "10.77.0.99", margin) == "names changed"
    assert ca.renewal_reason(fresh, "worker-node-12", "10.77.0.12", margin, now=NOW + timedelta(days=61)) == \
        "within the rotation margin"
    assert ca.renewal_reason(fresh, "worker-node-12", "10.77.0.12", margin, now=NOW + timedelta(days=59)) is None
    foreign = pki.ClusterCA(pki.create_ca("test CA", DAY)).issue("worker-node-12", "10.77.0.12", timedelta(days=90))
    assert ca.renewal_reason(foreign.cert, "worker-node-12", "10.77.0.12", margin) == "not from the current CA"


def test_a_new_ca_keeps_the_old_one_trusted_until_it_is_dropped(ca, vault, tmp_path):
    vault_file, password_file = vault
    before = ca.issue("worker-node-14", "127.0.0.1", DAY)
    bundle = pki.new_ca(vault_file, password_file, "test CA 2", lifetime("3650d"))
    new = pki.load_ca(vault_file, password_file)
    assert new.cert.subject.rfc4514_string() == "CN=test CA 2"
    # The node's old certificate: still trusted by clients, but the next deploy replaces it.
    assert new.renewal_reason(before.cert, "worker-node-14", "127.0.0.1", timedelta(hours=1)) == "not from the current CA"
    server = serve_tls(before, tmp_path, "pw")
    try:
        assert requests.get(f"https://127.0.0.1:{server.server_address[1]}/", verify=str(bundle), timeout=5).status_code == 401
    finally:
        server.shutdown()
        server.server_close()
    assert pki.drop_old_ca(vault_file) == 1
    server = serve_tls(before, tmp_path, "pw")
    try:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{server.server_address[1]}/", verify=str(bundle), timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    after = new.issue("worker-node-14", "127.0.0.1", DAY)
    assert new.renewal_reason(after.cert, "worker-node-14", "127.0.0.1", timedelta(hours=1)) is None


def test_a_bundle_without_its_key_in_the_vault_is_one_line(vault, tmp_path):
    vault_file, password_file = vault
    ca_cert_path(vault_file).write_bytes(pki.create_ca("orphan", DAY).cert)
    with pytest.raises(ConfigError) as error:
        pki.load_ca(vault_file, password_file)
    assert str(error.value).startswith(f"{vault_file}: {pki.CA_KEY_SECRET}: the CA key is missing from the vault")


def test_a_rotation_margin_not_shorter_than_the_lifetime_is_refused():
    from homelab.config import settings_from_data

    with pytest.raises(ConfigError) as error:
        settings_from_data("worker-node-14", "pki", PkiSettings, {"cert_lifetime": "10d", "rotation_margin": "10d"})
    assert str(error.value) == ("inventory data for worker-node-14: pki.rotation_margin: expected shorter than "
                                "cert_lifetime (10d), got 10d")


def test_the_lab_ca_bundle_matches_the_lab_vaults_key():
    repo = Path(__file__).resolve().parents[1]
    ca = pki.load_ca(repo / "secrets" / "lab.vault.yml", repo / "secrets" / "lab.vault-password")
    assert ca.cert.not_valid_after_utc > NOW + timedelta(days=365)
