"""The relay's port with `web_config_file` (exporter-toolkit's web config, as roles/pki writes it):
TLS only, a login for /metrics and /healthz, the webhook's bearer token over TLS. Real processes."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta

import pytest
import requests

from homelab.pki import ClusterCA, create_ca
from roles.pki import CERT_FILE, KEY_FILE
from roles.pki.web import bcrypt_hash, render_web_config
from tests.alert_relay.conftest import RELAY, Relay, needs_alertmanager, notification
from tests.alert_relay.test_alertmanager import alertmanager_for  # noqa: F401 (fixture)
from tests.loopback import wait_for

PASSWORD = "scrape-password-for-tests"


@pytest.fixture
def tls_files(tmp_path):
    ca = create_ca("relay test CA", timedelta(hours=1))
    pair = ClusterCA(ca).issue("relay", "127.0.0.1", timedelta(hours=1))
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    (tmp_path / "node.crt").write_bytes(pair.cert)
    (tmp_path / "node.key").write_bytes(pair.key)
    web = tmp_path / "web.yml"
    web.write_text(render_web_config({"prometheus": bcrypt_hash("prometheus", PASSWORD)})
                   .replace(CERT_FILE, str(tmp_path / "node.crt")).replace(KEY_FILE, str(tmp_path / "node.key")))
    return tmp_path


@pytest.fixture
def tls_relay(make_relay, tls_files) -> Relay:
    return make_relay(web_config_file=str(tls_files / "web.yml"), header_timeout_s=1.0)


def test_metrics_and_health_need_the_login_over_tls(tls_relay, tls_files):
    ca = str(tls_files / "ca.crt")
    for path in ("/metrics", "/healthz"):
        anonymous = requests.get(tls_relay.url + path, verify=ca, timeout=10)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(tls_relay.url + path, verify=ca, auth=("prometheus", "wrong"), timeout=10).status_code == 401
        assert requests.get(tls_relay.url + path, verify=ca, auth=("nobody", PASSWORD), timeout=10).status_code == 401
        assert requests.get(tls_relay.url + path, verify=ca, auth=("prometheus", PASSWORD), timeout=10).status_code == 200
    assert "alert_relay_queue_depth" in requests.get(tls_relay.url + "/metrics", verify=ca,
                                                     auth=("prometheus", PASSWORD), timeout=10).text


def test_plain_http_and_an_unknown_ca_get_nothing(tls_relay, tls_files):
    with pytest.raises(requests.ConnectionError):
        requests.get(tls_relay.url.replace("https://", "http://") + "/metrics", auth=("prometheus", PASSWORD), timeout=10)
    other = tls_files / "other-ca.crt"
    other.write_bytes(create_ca("someone else", timedelta(hours=1)).cert)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_relay.url + "/metrics", verify=str(other), auth=("prometheus", PASSWORD), timeout=10)


def test_the_webhook_takes_its_bearer_token_over_tls(tls_relay, tls_files, slack):
    ca = str(tls_files / "ca.crt")
    url = tls_relay.url + "/alertmanager"
    refused = requests.post(url, json=notification("TlsWebhook"), verify=ca, timeout=10,
                            auth=("prometheus", PASSWORD))  # a login is not the webhook's token
    assert refused.status_code == 401
    accepted = requests.post(url, json=notification("TlsWebhook"), verify=ca, timeout=10,
                             headers={"Authorization": "Bearer alertmanager-test-token"})
    assert accepted.status_code == 200, accepted.text
    wait_for(lambda: any("TlsWebhook" in str(call) for call in slack.calls), 15, "the alert in Slack")


def test_a_peer_that_never_finishes_the_handshake_is_cut_off(tls_relay, tls_files):
    port = int(tls_relay.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the relay
        assert time.monotonic() - started < 5  # header_timeout_s is 1 s here
    # ...and the relay still serves.
    assert requests.get(tls_relay.url + "/metrics", verify=str(tls_files / "ca.crt"), timeout=10).status_code == 401


@pytest.mark.parametrize("content, expected", [
    ("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n"
     "basic_auth_users: {prometheus: '$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234'}\n",
     "cannot load cert_file and key_file"),
    ("tls_server_config: {cert_file: a, key_file: b}\nbasic_auth_users: {prometheus: plain-text}\n",
     "basic_auth_users: prometheus: expected a bcrypt hash"),
    ("tls_server_config: {cert_file: a, key_file: b}\nbasic_auth_users: {}\n", "basic_auth_users: expected a mapping"),
    ("tls_server_config: {cert_file: a}\nbasic_auth_users: {}\n", "tls_server_config: expected cert_file and key_file"),
    ("http_server_config: {http2: true}\n", "expected exporter-toolkit's web config"),
])
def test_a_bad_web_config_is_one_line_naming_the_key(tmp_path, slack, faxplus, content, expected):
    relay = Relay(tmp_path / "bad", slack, faxplus, web_config_file=str(tmp_path / "web.yml"))
    (tmp_path / "web.yml").write_text(content)
    result = subprocess.run([str(RELAY), "--check-config", str(relay.config_path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"web_config_file: {tmp_path / 'web.yml'}: " in line and expected in line, line
    assert "$2b$" not in line



@needs_alertmanager
def test_alertmanager_delivers_over_tls_with_the_cluster_ca_and_its_token(tls_relay, tls_files, slack, alertmanager_for):
    manager = alertmanager_for(tls_relay.url, str(tls_files / "ca.crt"))
    manager.amtool_add("alertname=HostDown", "instance=worker-node-12:9100", "severity=critical")
    post = wait_for(lambda: slack.calls_of("chat.postMessage"), 30, "the firing message")[0].params
    assert post["text"].startswith("[FIRING:1] HostDown (critical)")
