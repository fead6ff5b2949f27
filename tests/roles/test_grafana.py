"""Grafana's rendered config, its nginx site (checked and driven through a real nginx), and its apt source."""

from __future__ import annotations

import base64
import configparser
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import import_module
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from homelab.config import ConfigError, model_from_data
from homelab.vault import load_vault
from roles import grafana, grafana_repo
from roles.grafana import Settings
from roles.alertmanager import Settings as AlertmanagerSettings
from roles.loki import Settings as LokiSettings
from roles.nginx import Settings as NginxSettings
from roles.loki.package import PACKAGE as LOKI
from roles.tuning.settings import load_tuning
from tests.roles.test_nginx import needs_nginx, run_site_check
from tests.roles.test_prometheus import topology_of

REPO = Path(__file__).resolve().parents[2]
TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")
PINNED = {"install": {"version": "11.6.0"}}



def settings(**data) -> Settings:
    """Grafana's settings from group data, on nginx's default ports unless the data sets them."""
    parsed = model_from_data("inventory data for master-node", Settings, {**PINNED, **data})
    return parsed.on_nginx(NginxSettings())


def ini(settings_: Settings, server_name: str = "master-node") -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(grafana.render_grafana_ini(settings_, server_name))
    return parser


def test_grafana_listens_only_on_its_socket_with_anonymous_access_off():
    conf = ini(settings())
    assert conf["server"]["protocol"] == "socket"
    assert conf["server"]["socket"] == "/run/grafana/grafana.sock"
    assert conf["server"]["socket_mode"] == "0660"
    assert "http_port" not in conf["server"]
    assert conf["auth.anonymous"]["enabled"] == "false"
    assert conf["users"]["allow_sign_up"] == "false"
    assert conf["server"]["root_url"] == "http://master-node/"


def test_admin_password_is_read_from_the_secret_file_and_never_rendered():
    conf = ini(settings())
    assert conf["security"]["admin_password"] == "$__file{/etc/grafana/admin_password}"
    secrets = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")
    assert secrets["grafana_admin_password"] not in grafana.render_grafana_ini(settings(), "master-node")


def test_tls_changes_the_public_url_and_secures_cookies():
    tls = settings(tls_certificate="/etc/ssl/grafana.pem", tls_certificate_key="/etc/ssl/private/grafana.key",
                   server_name="grafana.home.arpa")
    conf = ini(tls, "grafana.home.arpa")
    assert conf["server"]["root_url"] == "https://grafana.home.arpa/"
    assert conf["security"]["cookie_secure"] == "true"
    assert ini(settings(http_port=8080))["server"]["root_url"] == "http://master-node:8080/"


def test_with_pki_tls_on_grafana_is_https_on_nginxs_https_port_with_the_node_certificate():
    nginx = NginxSettings()
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(grafana.render_grafana_ini(settings(), "master-node", node_tls=True))
    assert conf["server"]["root_url"] == "https://master-node/"
    assert conf["security"]["cookie_secure"] == "true"
    site = grafana.render_site(settings(), "master-node", 4, node_tls=True)
    assert f"listen {nginx.https_port} ssl http2;" in site and "ssl_certificate" not in site
    # Plain HTTP's server block only redirects.
    redirect = site[site.index(f"listen {nginx.listen_port};"):].split("}")[0]
    assert "return 301 https://$host$request_uri;" in redirect and "proxy_pass" not in redirect
    assert settings(https_port=8443).https_port == 8443 and settings().https_port == nginx.https_port


def test_one_tls_file_without_the_other_is_a_one_line_error():
    with pytest.raises(ConfigError) as exc:
        settings(tls_certificate="/etc/ssl/grafana.pem")
    assert str(exc.value) == (
        "inventory data for master-node: tls_certificate_key: required when the other TLS file is set (both or neither)"
    )


def test_the_grafana_version_must_be_pinned():
    with pytest.raises(ConfigError) as exc:
        model_from_data("inventory data for master-node", Settings, {"install": {"source": "grafana-apt"}})
    assert str(exc.value) == "inventory data for master-node: install.version: required key is missing"


def test_datasources_point_at_the_first_host_of_each_role_with_the_uids_dashboards_use():
    topology = topology_of({"mon": {"ssh_hostname": "10.0.0.14", "prometheus": {"listen_port": 9999}},
                            "logs": {"ssh_hostname": "10.0.0.11", "loki": PINNED}, "spare": {}},
                           prometheus=["mon", "spare"], alertmanager=["mon"], loki=["logs"])
    doc = yaml.safe_load(grafana.render_datasources(**grafana.datasources(topology)))
    by_uid = {source["uid"]: source for source in doc["datasources"]}
    loki_port = LokiSettings.model_fields["listen_port"].default
    assert {uid: (s["type"], s["url"]) for uid, s in by_uid.items()} == {
        "prometheus": ("prometheus", "http://10.0.0.14:9999"),
        "loki": ("loki", f"http://10.0.0.11:{loki_port}"),
        "alertmanager": ("alertmanager", f"http://10.0.0.14:{AlertmanagerSettings().listen_port}"),
    }


def test_dashboard_provider_reads_the_folder_the_repo_dashboards_are_synced_to():
    doc = yaml.safe_load(grafana.render_dashboard_provider())
    [provider] = doc["providers"]
    assert provider["options"]["path"] == grafana.DASHBOARDS_DIR
    assert provider["allowUiUpdates"] is False
    # Grafana's file reader deletes a provisioned dashboard whose file is gone only when this is false
    # (pkg/services/provisioning/dashboards/file_reader.go, deleteDashboardIfFileIsMissing).
    assert provider["disableDeletion"] is False
    assert set(grafana.dashboards()) >= {"toy-redis.json", "node-overview.json", "nginx.json", "slo-error-budgets.json"}


def test_socket_folder_is_recreated_at_boot_for_grafana_only():
    lines = [line for line in grafana.render_tmpfiles().splitlines() if line and not line.startswith("#")]
    assert lines == [f"d {Path(grafana.SOCKET).parent} 0750 grafana grafana -"]


def test_site_proxies_to_the_socket_with_websocket_and_forwarded_headers():
    site = grafana.render_site(settings(), "master-node", TUNING.nginx.upstream_keepalive)
    assert "server unix:/run/grafana/grafana.sock;" in site
    assert f"keepalive {TUNING.nginx.upstream_keepalive};" in site
    assert "location /api/live/ {" in site
    for header in ("Upgrade $http_upgrade", "X-Forwarded-For $proxy_add_x_forwarded_for",
                   "X-Forwarded-Proto $scheme", "Host $host"):
        assert f"proxy_set_header {header};" in site
    assert "listen 80;" in site and "ssl" not in site


@pytest.fixture
def self_signed(tmp_path) -> tuple[Path, Path]:
    cert, key = tmp_path / "grafana.pem", tmp_path / "grafana.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=grafana.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@needs_nginx
def test_site_passes_nginx_t_plain_and_with_tls(tmp_path, self_signed):
    plain = grafana.render_site(settings(), "master-node", TUNING.nginx.upstream_keepalive)
    result = run_site_check(tmp_path, plain, grafana.SITE_NAME)
    assert result.returncode == 0, result.stderr
    cert, key = self_signed
    tls = grafana.render_site(settings(tls_certificate=str(cert), tls_certificate_key=str(key)), "grafana.test", 8)
    assert "return 301 https://$host$request_uri;" in tls
    result = run_site_check(tmp_path, tls, grafana.SITE_NAME)
    assert result.returncode == 0, result.stderr
    # nginx -t really reads the certificate: a missing one fails the check.
    missing = tls.replace(str(cert), str(tmp_path / "absent.pem"))
    assert run_site_check(tmp_path, missing, grafana.SITE_NAME).returncode != 0


@needs_nginx
def test_site_fits_beside_the_nginx_roles_own_config_and_default_site(tmp_path):
    from roles import nginx

    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "default.conf").write_text(nginx.render_default_site(nginx.Settings(listen_port=18090), TUNING))
    (sites / "grafana.conf").write_text(
        grafana.render_site(settings(http_port=18090), "master-node", TUNING.nginx.upstream_keepalive))
    conf = nginx.render_nginx_conf(nginx.Settings(), TUNING, "tuning.yaml").replace(nginx.SITES_DIR, str(sites))
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class EchoGrafana(BaseHTTPRequestHandler):
    """Stands in for Grafana on the unix socket: answers with the headers nginx sent, or a websocket echo."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            self.wfile.flush()
            self.wfile.write(self.rfile.read(5))  # echo one fixed-size frame's worth of bytes
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # unix-socket peers have no address to log
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def nginx_in_front_of_socket(tmp_path):
    """A real nginx serving the rendered site on a free loopback port, Grafana's socket replaced by a stand-in."""
    sock = tmp_path / "grafana.sock"
    upstream = socketserver.ThreadingUnixStreamServer(str(sock), EchoGrafana)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    site = grafana.render_site(settings(http_port=port), "grafana.test", 4).replace(grafana.SOCKET, str(sock))
    site = site.replace(f"listen [::]:{port};", "").replace(f"listen {port};", f"listen 127.0.0.1:{port};")
    (tmp_path / "grafana.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"user root; daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/grafana.conf; }}\n"
    )
    nginx = subprocess.Popen(["nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    nginx.terminate()
    nginx.wait(timeout=10)
    upstream.shutdown()
    upstream.server_close()


@needs_nginx
def test_site_proxies_requests_and_websockets_to_the_unix_socket(nginx_in_front_of_socket):
    import requests

    port = nginx_in_front_of_socket
    answer = requests.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": "grafana.test"}, timeout=5).json()
    assert answer["path"] == "/api/health"
    sent = {name.lower(): value for name, value in answer["headers"].items()}
    assert sent["host"] == "grafana.test"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    # No Upgrade from the client: the upstream connection is kept alive, not closed.
    assert sent.get("connection", "") == ""

    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /api/live/ws HTTP/1.1\r\nHost: grafana.test\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1024)
        assert head.startswith(b"HTTP/1.1 101")
        client.sendall(b"hello")
        echoed = head.split(b"\r\n\r\n", 1)[1]
        while len(echoed) < 5:
            echoed += client.recv(1024)
        assert echoed == b"hello"


@needs_nginx
def test_http_redirects_to_https_on_its_own_port(tmp_path, self_signed):
    cert, key = self_signed
    upstream_sock = tmp_path / "grafana.sock"
    upstream = socketserver.ThreadingUnixStreamServer(str(upstream_sock), EchoGrafana)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    site = grafana.render_site(settings(http_port=http_port, https_port=https_port, tls_certificate=str(cert),
                                        tls_certificate_key=str(key)), "grafana.test", 4)
    site = site.replace(grafana.SOCKET, str(upstream_sock))
    for port in (http_port, https_port):
        site = site.replace(f"listen [::]:{port}", "#").replace(f"listen {port}", f"listen 127.0.0.1:{port}")
    (tmp_path / "grafana.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"user root; daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/grafana.conf; }}\n")
    nginx = subprocess.Popen(["nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import requests

        deadline = time.monotonic() + 10
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{http_port}/d/toy?orgId=1", headers={"Host": "grafana.test"},
                                      allow_redirects=False, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and nginx.poll() is None, nginx.stderr.read().decode()
                time.sleep(0.05)
        assert answer.status_code == 301
        assert answer.headers["Location"] == f"https://grafana.test:{https_port}/d/toy?orgId=1"
        # The redirect target is where TLS really is served.
        served = requests.get(f"https://127.0.0.1:{https_port}/d/toy?orgId=1", headers={"Host": "grafana.test"},
                              verify=False, timeout=5).json()
        assert served["path"] == "/d/toy?orgId=1"
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def test_redirect_keeps_the_default_https_port_implicit():
    tls = grafana.render_site(settings(tls_certificate="/c.pem", tls_certificate_key="/k.pem"), "grafana.test", 4)
    assert "return 301 https://$host$request_uri;" in tls


def test_vendored_apt_key_is_grafanas_and_only_grafanas():
    assert grafana_repo.key_fingerprints(grafana_repo.KEY_FILE.read_text()) == [grafana_repo.KEY_FINGERPRINT]
    assert grafana_repo.checked_key().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


@pytest.mark.skipif(not shutil.which("gpg"), reason="needs gpg to cross-check the fingerprint reader")
def test_fingerprint_reader_agrees_with_gpg_on_a_multi_key_file(tmp_path):
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    if not keyring.exists():
        pytest.skip("needs Debian's archive keyring as a second, multi-key sample")
    armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + base64.encodebytes(keyring.read_bytes()).decode() \
        + "-----END PGP PUBLIC KEY BLOCK-----\n"
    listing = subprocess.run(["gpg", "--homedir", str(tmp_path), "--show-keys", "--with-colons", str(keyring)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    # A primary key's fingerprint is the first "fpr" record after its "pub" record (revokers come between).
    expected = []
    for i, line in enumerate(listing):
        if line.startswith("pub:"):
            expected.append(next(rec for rec in listing[i:] if rec.startswith("fpr:")).split(":")[9])
    assert len(expected) > 1
    assert grafana_repo.key_fingerprints(armored) == expected


def test_a_swapped_apt_key_stops_the_deploy_with_one_line(tmp_path, monkeypatch):
    other = Path("/usr/share/keyrings/debian-archive-bookworm-stable.gpg")
    if not other.exists():
        pytest.skip("needs one of Debian's archive keys as the wrong key")
    wrong = tmp_path / "grafana-apt-key.asc"
    wrong.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + base64.encodebytes(other.read_bytes()).decode()
                     + "-----END PGP PUBLIC KEY BLOCK-----\n")
    monkeypatch.setattr(grafana_repo, "KEY_FILE", wrong)
    monkeypatch.setattr(grafana_repo, "REPO_ROOT", tmp_path)
    with pytest.raises(ConfigError) as exc:
        grafana_repo.checked_key()
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("grafana-apt-key.asc: expected exactly the key B53AE77BADB630A683046005963FA27710458545")


def test_apt_source_is_deb822_signed_by_the_vendored_keyring():
    fields = dict(line.split(": ", 1) for line in grafana_repo.render_sources().splitlines()
                  if line and not line.startswith("#"))
    assert fields == {"Types": "deb", "URIs": "https://apt.grafana.com", "Suites": "stable",
                      "Components": "main", "Signed-By": "/etc/apt/keyrings/grafana.asc"}


def test_unreachable_repository_message_says_what_to_do_in_one_line():
    install = grafana_repo.GrafanaInstall(version="3.5.0")
    message = grafana_repo.unreachable_message(LOKI, install, "worker-node-11")
    assert "\n" not in message
    assert message.startswith("loki: source grafana-apt: https://apt.grafana.com is not reachable from worker-node-11;")
    assert "artifacts/loki/" in message and "loki.install.source = 'offline'" in message


# --- what a deploy plans -------------------------------------------------------------------------

DRY_DEPLOY = """
from importlib import import_module
import json
from pyinfra import host, state
if host.data.get("grafana_database"):
    # Stands in for Grafana's database, to plan as on a master-node deployed before.
    import roles.grafana
    roles.grafana.DATABASE = host.data.get("grafana_database")
if host.data.get("grafana_apt_url"):
    # Stands in for apt.grafana.com, to plan as on a node that reaches it.
    import roles.grafana_repo
    roles.grafana_repo.GRAFANA_APT_URL = host.data.get("grafana_apt_url")
for role in host.data.get("roles").split(","):
    import_module(f"roles.{role}").apply()
# The commands of the operations named in `expand` (pyinfra's --json plan has only their names).
wanted = set(host.data.get("expand", "").split(";"))
commands = {}
for op_hash, op in state.ops[host].items():
    for name in sorted(wanted & set(state.op_meta[op_hash].names)):
        commands[name] = [str(command) for command in op.command_generator()]
with open(host.data.get("commands_file"), "w") as out:
    json.dump(commands, out)
"""


class DryPlan(NamedTuple):
    names: list[str]
    output: str
    # operation name -> its commands, for the names asked for
    commands: dict[str, list[str]]


def dry_plan(tmp_path: Path, roles: str, offline: dict[str, str], *data: str, expand: tuple[str, ...] = ()) -> DryPlan:
    """What `pyinfra --dry` plans for ``roles`` on @local (nothing is executed), with the repo's group data.

    Components in ``offline`` (name -> version) install from empty stand-ins named as their release assets.
    """
    tmp_path.mkdir(exist_ok=True)
    vault = {"vault_file": "secrets/lab.vault.yml", "vault_password_file": "secrets/lab.vault-password"}
    groups = ["grafana", "nginx", "loki", "log_shipper", "prometheus", "alertmanager"]
    (tmp_path / "inventory.py").write_text(
        f"_local = ('@local', {vault!r})\n" + "".join(f"{group} = [_local]\n" for group in groups))
    (tmp_path / "deploy.py").write_text(DRY_DEPLOY)
    overrides = tmp_path / "group_data"
    overrides.mkdir()
    group_of = {"grafana": "grafana", "loki": "loki", "promtail": "log_shipper", "alloy": "log_shipper"}
    for component, version in offline.items():
        asset = import_module(f"roles.{component}.package").PACKAGE.asset_name(version, "amd64")
        (tmp_path / "artifacts" / component).mkdir(parents=True)
        (tmp_path / "artifacts" / component / asset).write_bytes(b"")
        install = {"source": "offline", "version": version, "artifacts_dir": str(tmp_path / "artifacts")}
        with (overrides / f"{group_of[component]}.py").open("a") as data_file:
            data_file.write(f"{component} = {{'install': {install!r}}}\n")
    commands_file = tmp_path / "commands.json"
    extra = [arg for item in (*data, f"commands_file={commands_file}", f"expand={';'.join(expand)}")
             for arg in ("--data", item)]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "--dry", "--json", "--group-data", "inventory/group_data",
         "--group-data", str(overrides), "--data", f"roles={roles}", *extra,
         str(tmp_path / "inventory.py"), str(tmp_path / "deploy.py")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # pyinfra merges operations of different roles planned at the same call-stack position: read every name.
    names = [name for op in json.loads(result.stdout)["plan"] for name in op["names"]]
    return DryPlan(names, result.stdout + result.stderr, json.loads(commands_file.read_text()))


plans_on_this_machine = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("dpkg"),
    reason="plans against this machine as a Debian node (root, dpkg), as the lab's nodes are")


@plans_on_this_machine
def test_dry_run_plans_every_role_and_never_shows_the_admin_password(tmp_path):
    offline = {"grafana": "11.6.0", "loki": "3.5.0", "alloy": "1.10.0"}
    plan, output, commands = dry_plan(tmp_path, "grafana,loki,alloy", offline,
                                      expand=("loki | Loki config", "alloy | Alloy config"))
    for expected in ("grafana | Install grafana_11.6.0_amd64.deb", "grafana | Grafana admin password",
                     "grafana | grafana.ini", "grafana | Dashboard toy-redis.json", "grafana | Dashboard slo-error-budgets.json",
                     "grafana | www-data may open Grafana's socket", "grafana | nginx site grafana",
                     "loki | Install loki_3.5.0_amd64.deb", "loki | Loki config",
                     "alloy | Install alloy-1.10.0-1.amd64.deb", "alloy | Alloy config"):
        assert expected in plan
    # Grafana is configured only after it is installed, and its site only once nginx may open the socket.
    assert plan.index("grafana | Install grafana_11.6.0_amd64.deb") < plan.index("grafana | grafana.ini")
    assert plan.index("grafana | www-data may open Grafana's socket") < plan.index("grafana | nginx site grafana")
    secrets = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")
    assert secrets["grafana_admin_password"] not in output
    # Each new config passes the packaged binary's own checker before it is moved in.
    loki_config = commands["loki | Loki config"]
    check = loki_config.index("/usr/bin/loki -verify-config -config.file=/etc/loki/config.yml.staged")
    assert loki_config[check + 1] == "mv -f /etc/loki/config.yml.staged /etc/loki/config.yml"
    alloy_config = commands["alloy | Alloy config"]
    check = alloy_config.index("/usr/bin/alloy validate /etc/alloy/config.alloy.staged")
    assert alloy_config[check + 1] == "mv -f /etc/alloy/config.alloy.staged /etc/alloy/config.alloy"
    # No database yet (a first deploy): Grafana creates it with the vault password, nothing to reset.
    assert not [name for name in plan if "admin password change" in name or "Apply a changed" in name]


@plans_on_this_machine
def test_a_changed_admin_password_is_set_while_grafana_is_stopped(tmp_path):
    database = tmp_path / "grafana.db"
    database.write_bytes(b"")
    plan, _, commands = dry_plan(tmp_path / "plan", "grafana", {"grafana": "11.6.0"}, f"grafana_database={database}",
                                 expand=("grafana | Apply a changed Grafana admin password",))
    order = [plan.index(f"grafana | {name}") for name in (
        "Grafana admin password", "Stop Grafana for the admin password change",
        "Apply a changed Grafana admin password", "Grafana enabled and running")]
    assert order == sorted(order)
    assert commands["grafana | Apply a changed Grafana admin password"] == [
        "runuser -u grafana -- /usr/share/grafana/bin/grafana cli --homepath /usr/share/grafana "
        "--config /etc/grafana/grafana.ini admin reset-admin-password --password-from-stdin < /etc/grafana/admin_password"
    ]


@plans_on_this_machine
def test_from_grafanas_repository_alloy_is_pinned_as_apt_spells_its_version(tmp_path):
    # A loopback stand-in answers the repository's reachability probe; --dry installs nothing.
    release = tmp_path / "repo" / "dists" / grafana_repo.GRAFANA_APT_SUITE
    release.mkdir(parents=True)
    (release / "InRelease").write_text("stand-in\n")
    repo = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(tmp_path / "repo")))
    threading.Thread(target=repo.serve_forever, daemon=True).start()
    try:
        plan, _, commands = dry_plan(tmp_path / "plan", "alloy", {},
                                     f"grafana_apt_url=http://127.0.0.1:{repo.server_address[1]}",
                                     expand=("alloy | Install alloy 1.10.0-1",))
    finally:
        repo.shutdown()
        repo.server_close()
    assert plan.index("alloy | Grafana's apt source") < plan.index("alloy | Install alloy 1.10.0-1")
    [install] = commands["alloy | Install alloy 1.10.0-1"]
    assert install.endswith("install --no-install-recommends alloy=1.10.0-1")


@plans_on_this_machine
def test_promtail_is_still_planned_with_one_deprecation_line(tmp_path):
    plan, output, commands = dry_plan(tmp_path, "promtail", {"promtail": "3.5.0"}, "log_shipper=promtail",
                                      expand=("promtail | Promtail config",))
    warnings = [line for line in output.splitlines() if "promtail reached end of life" in line]
    assert len(warnings) == 1
    assert "set log_shipper = 'alloy' in group data" in warnings[0]
    assert "promtail | Install promtail_3.5.0_amd64.deb" in plan
    # The package's unit runs promtail with its primary group; no promtail group is made for it.
    assert not [name for name in plan if "group" in name and "adm" not in name]
    assert "/usr/bin/promtail -check-syntax -config.file=/etc/promtail/config.yml.staged" \
        in commands["promtail | Promtail config"]


@plans_on_this_machine
def test_without_the_repository_a_component_plans_one_failing_step_and_nothing_else(tmp_path):
    reachable = subprocess.run(["/usr/lib/apt/apt-helper", "download-file",
                                "https://apt.grafana.com/dists/stable/InRelease", str(tmp_path / "InRelease")],
                               capture_output=True, timeout=60).returncode == 0
    if reachable:
        pytest.skip("apt.grafana.com is reachable from this machine: the unreachable path cannot be shown here")
    plan, _, _ = dry_plan(tmp_path / "strict", "alloy", {})
    assert plan == ["alloy | alloy: Grafana's apt repository is reachable"]
    # Lab nodes (vendor_packages_optional) plan nothing for the component and say why in one line.
    plan, output, _ = dry_plan(tmp_path / "lab", "alloy", {}, "vendor_packages_optional=true")
    assert plan == []
    assert ("skipped alloy: source grafana-apt: https://apt.grafana.com is not reachable from @local; "
            "put Grafana Labs' release asset alloy-1.10.0-1.<arch>.deb in artifacts/alloy/") in output
