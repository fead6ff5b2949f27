"""homelab.access: how the control machine reaches a node's service, with TLS off and on."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab.access import OPERATOR, ca_cert_path, password_secret
from homelab.config import ConfigError
from homelab.topology import ROLES, Topology
from tests.test_vault import encrypt

REPO = Path(__file__).resolve().parents[1]
LAB = Topology.load(REPO / "inventory" / "lab.py")


def inventory(tmp_path: Path, host_data: str) -> Topology:
    """A one-host cluster running Prometheus, with ``host_data`` (Python dict items) added."""
    (tmp_path / "group_data").mkdir(exist_ok=True)
    path = tmp_path / "hosts.py"
    path.write_text(f'prometheus = [("worker-node-14", {{"ssh_hostname": "10.9.9.14", {host_data}}})]\n')
    return Topology.load(path)


def test_with_tls_off_every_listener_is_plain_http_without_a_login():
    for role in ROLES:
        for listener in role.listeners:
            for host in LAB.serving(role.name):
                access = LAB.access(role.name, host, listener.name)
                assert access.url("/x") == LAB.endpoint(role.name, host, listener.name).url("/x")
                assert access.url("/x").startswith("http://")
                assert (access.tls, access.auth, access.verify, access.ssl_context()) == (False, None, True, None)


def test_with_tls_on_a_secured_listener_is_https_with_the_cluster_ca_and_the_operators_login(tmp_path):
    vault_file, password_file = encrypt(tmp_path, f'{password_secret(OPERATOR)}: "s3cret-operator"\n')
    ca_file = ca_cert_path(vault_file)
    ca_file.write_text("a certificate")  # read only by the TLS client, which these checks do not start
    topology = inventory(tmp_path, f'"vault_file": "{vault_file}", "vault_password_file": "{password_file}", '
                                   '"pki": {"tls": True}')
    access = topology.access("prometheus")
    assert access.url("/api/v1/query") == f"https://10.9.9.14:{access.endpoint.port}/api/v1/query"
    assert access.verify == str(ca_file) and access.ca_file == ca_file
    assert access.auth == (OPERATOR, "s3cret-operator")
    assert "s3cret-operator" not in repr(access)
    with access.session() as session:
        assert session.auth == access.auth and session.verify == str(ca_file)


def test_the_ca_certificate_sits_beside_its_vault():
    assert ca_cert_path("secrets/lab.vault.yml") == REPO / "secrets" / "lab.ca.crt"


def test_tls_on_without_the_ca_certificate_is_one_line_naming_it(tmp_path):
    vault_file, password_file = encrypt(tmp_path, f'{password_secret(OPERATOR)}: "pw"\n')
    topology = inventory(tmp_path, f'"vault_file": "{vault_file}", "vault_password_file": "{password_file}", '
                                   '"pki": {"tls": True}')
    with pytest.raises(ConfigError) as error:
        topology.access("prometheus")
    assert str(error.value) == f"{ca_cert_path(vault_file)}: the cluster CA certificate is missing (create it: homelab pki init)"


def test_tls_on_without_the_operators_password_names_the_vault_key(tmp_path):
    vault_file, password_file = encrypt(tmp_path, 'other: "x"\n')
    ca_cert_path(vault_file).write_text("a certificate")
    topology = inventory(tmp_path, f'"vault_file": "{vault_file}", "vault_password_file": "{password_file}", '
                                   '"pki": {"tls": True}')
    with pytest.raises(ConfigError) as error:
        topology.access("prometheus")
    assert str(error.value) == (f"{vault_file}: {password_secret(OPERATOR)}: secret is missing from the vault "
                                "(add it with ansible-vault edit)")


def test_a_bad_tls_switch_is_one_line_naming_the_key(tmp_path):
    topology = inventory(tmp_path, '"pki": {"tls": "yes please"}')
    with pytest.raises(ConfigError) as error:
        topology.access("prometheus")
    assert str(error.value).startswith("inventory data for worker-node-14: pki.tls: ")


def test_a_listener_admitting_callers_by_certificate_gets_the_control_machines_own(tls_topology):
    """What nginx fronts: no password, a client certificate from the cluster CA named
    CONTROL_CERT_NAME (which nginx admits where the control machine calls), its key private."""
    import ssl
    import stat

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from homelab.access import CONTROL_CERT_NAME, certificate_names

    [host] = tls_topology.serving("nginx")[:1]
    access = tls_topology.access("nginx", host, "mtail")
    assert access.url().startswith("https://") and access.auth is None and access.client_cert
    cert_file, key_file = access.client_cert
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(access.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CONTROL_CERT_NAME
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert CONTROL_CERT_NAME in certificate_names(tls_topology, host, "nginx", "mtail")
    with access.session() as session:
        assert session.cert == (str(cert_file), str(key_file))
    assert isinstance(access.ssl_context(), ssl.SSLContext)
    # One certificate per process, whichever listener asks.
    assert tls_topology.access("nginx", host, "exporter").client_cert == access.client_cert
