"""nginx's rendered config: tuning applied, checked by the real `nginx -t`, and the site check."""

import functools
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from homelab.alerts.catalog import NOT_A_CALLER_STATUS, UNVERIFIED_CERTIFICATE_STATUS
from roles.nginx import (FRONTED_SITE, SITES_DIR, Settings, Upstream, exporter_listen, render_default_site,
                         render_fronted_site, render_nginx_conf, site_check_command)
from roles.tuning.settings import load_tuning

REPO = Path(__file__).resolve().parents[2]
TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")

needs_nginx = pytest.mark.skipif(
    not shutil.which("nginx") or os.geteuid() != 0 or not Path("/etc/nginx/mime.types").exists(),
    reason="needs Debian's nginx installed and root for `nginx -t` (./dev setup installs it)",
)


def test_tuning_reaches_nginx_conf():
    conf = render_nginx_conf(Settings(), TUNING, "tuning.yaml")
    assert f"worker_connections {TUNING.nginx.worker_connections};" in conf
    assert f"worker_rlimit_nofile {TUNING.nginx.worker_rlimit_nofile};" in conf
    assert f"keepalive_timeout {TUNING.nginx.keepalive_timeout_s}s;" in conf
    site = render_default_site(Settings(), TUNING)
    assert f"backlog={TUNING.nginx.listen_backlog}" in site


def test_unix_socket_upstream_keeps_connections_alive():
    settings = Settings(upstreams=[Upstream(name="grafana", server="unix:/run/grafana/grafana.sock")])
    conf = render_nginx_conf(settings, TUNING, "tuning.yaml")
    block = conf[conf.index("upstream grafana {"):]
    assert "server unix:/run/grafana/grafana.sock;" in block.split("}")[0]
    assert f"keepalive {TUNING.nginx.upstream_keepalive};" in block.split("}")[0]


@needs_nginx
def test_rendered_config_passes_nginx_t(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "default.conf").write_text(render_default_site(Settings(listen_port=18080), TUNING))
    conf = render_nginx_conf(Settings(), TUNING, "tuning.yaml").replace(SITES_DIR, str(sites))
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def run_site_check(tmp_path: Path, content: str, name: str = "probe") -> subprocess.CompletedProcess:
    """The role's check of a site named ``name`` (the grafana role's site too), on ``content``."""
    staged = tmp_path / f"{name}.conf.staged"
    staged.write_text(content)
    return subprocess.run(["sh", "-c", site_check_command(name).format(staged=staged)],
                          capture_output=True, text=True)


@needs_nginx
def test_site_check_accepts_a_good_site_and_refuses_a_broken_one(tmp_path):
    good = "server { listen 127.0.0.1:18081; server_name probe.invalid; location / { return 204; } }\n"
    assert run_site_check(tmp_path, good).returncode == 0
    broken = "server { listen 127.0.0.1:18081; location / { proxy_pass http://nowhere-upstream-x; }\n"
    result = run_site_check(tmp_path, broken)
    assert result.returncode != 0
    assert "nginx" in result.stderr
    # The check works in a scratch copy: nothing is left in the live sites folder.
    assert not list(Path(SITES_DIR).glob("probe.conf*"))


@pytest.mark.skipif(not shutil.which("mtail"), reason="needs Debian's mtail (./dev setup installs it)")
def test_mtail_program_compiles_and_its_check_refuses_a_broken_one(tmp_path):
    from roles.common import render
    from roles.nginx import MTAIL_CHECK

    def check(content: str) -> int:
        staged = tmp_path / "nginx-responses.mtail.staged"
        staged.write_text(content)
        return subprocess.run(["sh", "-c", MTAIL_CHECK.format(staged=staged)], capture_output=True).returncode

    program = render("nginx/responses.mtail.j2")
    assert "counter nginx_http_responses_total by code_class" in program
    assert check(program) == 0
    assert check(program.replace("/ {", "/ ", 1)) != 0


# --- pki.tls on: nginx serves https with the node's certificate and fronts mtail and the exporter --

def test_with_tls_on_both_backends_are_fronted_for_the_callers_the_topology_names(tls_topology):
    from homelab.access import CONTROL_CERT_NAME
    from roles.nginx import topology_fronts

    [host] = tls_topology.serving("nginx")[:1]
    settings = tls_topology.settings(host, "nginx")
    fronts = topology_fronts(tls_topology, host, settings)
    assert {name: (front.public_port, front.loopback_port) for name, front in fronts.items()} == {
        "exporter": (settings.exporter_port, settings.exporter_loopback_port),
        "mtail": (settings.mtail_port, settings.mtail_loopback_port)}
    for name, front in fronts.items():
        inbound = next(i for i in tls_topology.inbound(host) if (i.role, i.listener) == ("nginx", name))
        # Prometheus scrapes it, blackbox checks it, the control machine's lab checks call it.
        assert front.callers == sorted({*inbound.callers, CONTROL_CERT_NAME}), name
        assert set(tls_topology.hosts_of("prometheus")) | set(tls_topology.hosts_of("blackbox")) <= set(front.callers)
    # Behind nginx, the backend listens on loopback only; with TLS off, it keeps its public port.
    assert exporter_listen(settings, True) == f"127.0.0.1:{settings.exporter_loopback_port}"
    assert exporter_listen(settings, False) == f":{settings.exporter_port}"


def test_tls_off_listens_without_ssl():
    """With TLS off nothing listens with ssl (nginx.conf's certificate lines stay unused), nor on
    https_port, and HTTP's port serves the site rather than a redirect."""
    conf = render_nginx_conf(Settings(), TUNING, "tuning.yaml")
    site = render_default_site(Settings(), TUNING)
    import re

    listens = re.findall(r"^\s*listen\s+([^;]*);", conf + site, re.M)
    assert listens and not [listen for listen in listens if " ssl" in listen]
    assert not [listen for listen in listens if re.search(rf"(^|:){Settings().https_port}\b", listen)]
    assert "return 301" not in site


def test_the_redirect_names_the_https_port_only_when_it_is_not_https_own():
    from homelab.types import SCHEME_PORTS
    from roles.nginx import https_redirect

    assert https_redirect(SCHEME_PORTS["https"]) == "return 301 https://$host$request_uri;"
    assert https_redirect(8443) == "return 301 https://$host:8443$request_uri;"


@pytest.fixture
def tls_nginx(tls_topology):
    """A real nginx (Debian's, as on the nodes) with the role's nginx.conf, default site and fronted
    site rendered with pki.tls on, on free loopback ports, a node pair issued by a throwaway CA,
    and a backend on the fronted mtail's loopback port."""
    import tempfile

    from homelab.pki import ClusterCA, create_ca
    from roles.nginx import topology_fronts
    from tests.local_http import QuietHandler, serving
    from tests.loopback import free_port, wait_for

    class Metrics(QuietHandler):
        def do_GET(self):
            body = b"backend_up 1\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    # nginx's workers run as www-data: the folder and files must be reachable by it.
    folder = Path(tempfile.mkdtemp(prefix="nginx-tls-"))
    folder.chmod(0o755)
    ca_pair = create_ca("nginx test CA", timedelta(hours=1))
    ca = ClusterCA(ca_pair)
    (folder / "ca.crt").write_bytes(ca_pair.cert)
    [host] = tls_topology.serving("nginx")[:1]
    pair = ca.issue(host, "127.0.0.1", timedelta(hours=1))
    # Root's only: nginx's master reads it, its workers (www-data) never.
    (folder / "node.key").touch(mode=0o600)
    (folder / "node.key").write_bytes(pair.key)
    (folder / "node.crt").write_bytes(pair.cert)
    with serving(Metrics) as backend:
        settings = Settings(listen_port=free_port(), https_port=free_port(), status_port=free_port(), mtail_port=free_port(),
                            exporter_port=free_port(), mtail_loopback_port=backend.server_port)
        sites = folder / "sites"
        sites.mkdir()
        (sites / "default.conf").write_text(render_default_site(settings, TUNING, tls=True))
        fronts = topology_fronts(tls_topology, host, settings)
        (sites / f"{FRONTED_SITE}.conf").write_text(render_fronted_site(fronts, str(folder / "ca.crt")))
        conf = (with_pair(render_nginx_conf(settings, TUNING, "tuning.yaml"), folder)
                .replace(SITES_DIR, str(sites)).replace("/run/nginx.pid", str(folder / "nginx.pid"))
                .replace("/var/log/nginx/", str(folder) + "/"))
        (folder / "nginx.conf").write_text(conf)
        checked = subprocess.run(["nginx", "-t", "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        started = subprocess.run(["nginx", "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        try:
            wait_for(lambda: (folder / "nginx.pid").exists(), 10, "nginx's pid file")
            yield folder, ca, settings, fronts
        finally:
            subprocess.run(["nginx", "-c", str(folder / "nginx.conf"), "-s", "stop"], capture_output=True)
            wait_for(lambda: not (folder / "nginx.pid").exists(), 10, "nginx stopped")
            shutil.rmtree(folder)


def with_pair(conf: str, folder: Path) -> str:
    """nginx.conf ``conf`` with its certificate lines (roles.nginx.CERTIFICATE_INCLUDE, pki.tls on)
    in ``folder``, naming the node's certificate and key there instead of roles.pki's paths."""
    from roles.nginx import CERTIFICATE_INCLUDE, render_certificate_include
    from roles.pki import CERT_FILE, KEY_FILE

    (folder / "nginx-certificate.conf").write_text(render_certificate_include().replace(
        CERT_FILE, str(folder / "node.crt")).replace(KEY_FILE, str(folder / "node.key")))
    return conf.replace(str(Path(CERTIFICATE_INCLUDE).parent), str(folder))


def client_pair(folder: Path, name: str, issued) -> tuple[str, str]:
    """requests' cert= for ``issued`` (a homelab.pki.Issued), written into ``folder``."""
    (folder / f"{name}.crt").write_bytes(issued.cert)
    (folder / f"{name}.key").write_bytes(issued.key)
    return str(folder / f"{name}.crt"), str(folder / f"{name}.key")


def served_serial(port: int, ca_file: Path) -> int:
    import socket
    import ssl

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


@needs_nginx
def test_with_tls_on_nginx_fronts_mtail_for_the_callers_certificates_only(tls_nginx, tls_topology, tmp_path):
    import requests

    from homelab.access import CONTROL_CERT_NAME
    from homelab.pki import ClusterCA, create_ca

    folder, ca, settings, fronts = tls_nginx
    verify = str(folder / "ca.crt")
    mtail = f"https://127.0.0.1:{settings.mtail_port}/metrics"

    def status(cert=None, **kwargs) -> int:
        return requests.get(mtail, verify=verify, cert=cert, timeout=5, **kwargs).status_code

    callers = fronts["mtail"].callers
    [caller] = [name for name in callers if name != CONTROL_CERT_NAME][:1]
    [stranger] = [name for name in tls_topology.hosts if name not in callers][:1]
    # No certificate (a login is no way in either), or one of another CA with a caller's name.
    assert status() == UNVERIFIED_CERTIFICATE_STATUS
    assert status(auth=("prometheus", "anything")) == UNVERIFIED_CERTIFICATE_STATUS
    other_ca = ClusterCA(create_ca("another CA", timedelta(hours=1)))
    forged = client_pair(tmp_path, "forged", other_ca.issue(caller, "127.0.0.1", timedelta(hours=1)))
    assert status(forged) == UNVERIFIED_CERTIFICATE_STATUS
    # The cluster CA's certificate of a node the topology does not name as a caller.
    not_a_caller = client_pair(tmp_path, "stranger", ca.issue(stranger, "127.0.0.1", timedelta(hours=1)))
    assert status(not_a_caller) == NOT_A_CALLER_STATUS
    # Each caller's node certificate, and the control machine's: the backend's answer.
    for name in callers:
        issued = ca.issue_client(name, timedelta(hours=1)) if name == CONTROL_CERT_NAME else \
            ca.issue(name, "127.0.0.1", timedelta(hours=1))
        pair = client_pair(tmp_path, "caller", issued)
        answer = requests.get(mtail, verify=verify, cert=pair, timeout=5)
        assert (answer.status_code, answer.text) == (200, "backend_up 1\n"), name
    assert requests.post(mtail, verify=verify, cert=pair, data=b"x", timeout=5).status_code == 403


@needs_nginx
def test_with_tls_on_http_only_redirects_to_the_https_site_with_the_node_certificate(tls_nginx, tmp_path):
    """HTTP's port answers every request with a 301 to the same host and path on https_port, where
    the site is served with the node's certificate; a client trusting another CA refuses it."""
    import requests

    from homelab.pki import create_ca

    folder, _, settings, _ = tls_nginx
    verify = str(folder / "ca.crt")
    plain = f"http://127.0.0.1:{settings.listen_port}"
    for host, path in (("master-node", "/healthz"), ("grafana.home.arpa", "/d/x?orgId=1&from=now-1h"),
                       ("127.0.0.1", "/")):
        answer = requests.get(f"{plain}{path}", headers={"Host": host}, allow_redirects=False, timeout=5)
        assert (answer.status_code, answer.headers["Location"]) == (
            301, f"https://{host}:{settings.https_port}{path}"), (host, path, answer.text)
    # Whatever the method: nothing but the redirect is served over plain http.
    posted = requests.post(f"{plain}/healthz", data=b"x", allow_redirects=False, timeout=5)
    assert posted.status_code == 301
    # Followed, the redirect ends at the site over https, verified with the cluster CA.
    followed = requests.get(f"{plain}/healthz", verify=verify, timeout=5)
    assert (followed.status_code, followed.text, followed.url) == (
        200, "ok\n", f"https://127.0.0.1:{settings.https_port}/healthz")
    assert [hop.status_code for hop in followed.history] == [301]
    # The site asks for no login (the application behind has its own); plain http on it gets 400.
    assert requests.get(f"https://127.0.0.1:{settings.https_port}/", verify=verify, timeout=5).status_code in (200, 404)
    assert requests.get(f"http://127.0.0.1:{settings.https_port}/healthz", timeout=5).status_code == 400
    other = tmp_path / "other-ca.crt"
    other.write_bytes(create_ca("another CA", timedelta(hours=1)).cert)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{settings.https_port}/healthz", verify=str(other), timeout=5)


@needs_nginx
def test_a_flood_of_wrong_logins_on_a_fronted_port_does_not_stall_nginx(tls_nginx, tls_topology, tmp_path):
    """The hole client certificates close: with a bcrypt login, each wrong password held nginx's
    event loop ~80 ms. Under a flood of them (no certificate), the site and a caller's scrape still
    answer quickly, and nginx's own counter shows it answered the flood rather than queueing it."""
    import requests

    from tests.flooder import Flooder, median_wait

    folder, ca, settings, fronts = tls_nginx
    verify = str(folder / "ca.crt")
    [caller] = [name for name in fronts["mtail"].callers if name in tls_topology.hosts][:1]
    pair = client_pair(tmp_path, "caller", ca.issue(caller, "127.0.0.1", timedelta(hours=1)))

    def handled_requests() -> int:
        # stub_status: "Active connections: N", then "server accepts handled requests" and their values.
        text = requests.get(f"http://127.0.0.1:{settings.status_port}/stub_status", timeout=5).text
        return int(text.splitlines()[2].split()[2])

    before = handled_requests()
    flood = Flooder(settings.mtail_port, {"guess": FLOOD_THREADS}, FLOOD_S, tls=True)
    probes = {url: lambda url=url, cert=cert: requests.get(url, verify=verify, cert=cert, timeout=10).status_code
              for url, cert in ((f"https://127.0.0.1:{settings.https_port}/healthz", None),
                                (f"https://127.0.0.1:{settings.mtail_port}/metrics", pair))}
    waited = median_wait(flood, probes, FLOOD_S / 2, at_least=FLOOD_AT_LEAST)
    assert waited < ANSWER_WITHIN_S, f"requests waited a median {waited:.2f}s"
    # nginx answered the flood (400s), not just accepted it.
    assert handled_requests() - before >= FLOOD_AT_LEAST


# The flood: threads sending wrong logins, for how long, and how many of its requests nginx must
# have handled. Measured on this 2-core machine at load 6-7 with the same flood against nginx's
# former auth_basic with a bcrypt hash: it handled 71 in FLOOD_S and the site's and the scrape's
# requests waited a median 0.74-0.85 s (max 2.1 s); with certificates 650+ and 0.10-0.19 s.
FLOOD_THREADS = 8
FLOOD_S = 8.0
FLOOD_AT_LEAST = 300
# Median wait of the site's and a caller's requests during the flood: generous for a loaded box.
ANSWER_WITHIN_S = 0.5


@needs_nginx
def test_nginx_reads_the_key_as_root_only_and_serves_a_rotated_pair_after_a_reload(tls_nginx):
    """The key is the root master's alone (0600 here: no worker could read it), and a new pair is
    served once nginx reloads, what roles/nginx does when the deploy writes one."""
    from cryptography import x509

    folder, ca, settings, _ = tls_nginx
    assert (folder / "node.key").stat().st_mode & 0o077 == 0
    before = served_serial(settings.mtail_port, folder / "ca.crt")
    pair = ca.issue("master-node", "127.0.0.1", timedelta(hours=1))
    (folder / "node.key").write_bytes(pair.key)
    (folder / "node.crt").write_bytes(pair.cert)
    assert served_serial(settings.mtail_port, folder / "ca.crt") == before
    reloaded = subprocess.run(["nginx", "-c", str(folder / "nginx.conf"), "-s", "reload"], capture_output=True, text=True)
    assert reloaded.returncode == 0, reloaded.stderr
    new = x509.load_pem_x509_certificate(pair.cert).serial_number
    from tests.loopback import wait_for

    # Each port on its own: an old worker still finishing its shutdown may take one more connection.
    for port in (settings.mtail_port, settings.https_port):
        wait_for(lambda: served_serial(port, folder / "ca.crt") == new, 10, f"the new certificate served on {port}")


@needs_nginx
def test_grafanas_site_with_tls_on_is_served_over_https_on_nginxs_https_port(tls_nginx):
    import requests

    from homelab.config import model_from_data
    from roles import grafana

    folder, _, settings, _ = tls_nginx
    own = model_from_data("inventory data for master-node", grafana.Settings,
                          {"install": {"version": "11.6.0"}}).on_nginx(settings)
    (folder / "sites" / "grafana.conf").write_text(grafana.render_site(own, "grafana.test", 4, node_tls=True))
    for command in (["nginx", "-t", "-q"], ["nginx", "-s", "reload"]):
        done = subprocess.run([*command, "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert grafana.root_url(own, "grafana.test", node_tls=True) == f"https://grafana.test:{settings.https_port}/"

    def grafana_answer() -> int:
        # Grafana's socket is absent here: nginx's 502 from its upstream shows the request reached
        # Grafana's server block, over TLS with the node's certificate.
        return requests.get(f"https://127.0.0.1:{settings.https_port}/login", headers={"Host": "grafana.test"},
                            verify=str(folder / "ca.crt"), timeout=5).status_code

    from tests.loopback import wait_for

    wait_for(lambda: grafana_answer() == 502, 10, "Grafana's server block answering over https")
    # Its plain port only redirects, to the root_url's port.
    moved = requests.get(f"http://127.0.0.1:{settings.listen_port}/login?next=1", headers={"Host": "grafana.test"},
                         allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (
        301, f"{grafana.root_url(own, 'grafana.test', node_tls=True)}login?next=1")


@needs_nginx
@pytest.mark.parametrize("default_tls, grafana_tls, fronted_present", [
    (False, True, True), (False, True, False), (True, False, False), (False, False, True)])
def test_one_nginx_conf_passes_nginx_t_with_sites_halfway_between_tls_on_and_off(
        tmp_path, tls_topology, default_tls, grafana_tls, fronted_present):
    """Turning pki.tls on or off changes the sites one at a time (Grafana's in a later role): every
    mix must pass the `nginx -t` each change is checked with, or the deploy stops halfway. The
    node's certificate, key, CA bundle and nginx's certificate lines exist in every mix: roles/pki
    writes the pair before nginx's role when pki.tls goes on, and removes its folder after every
    role when it goes off."""
    from homelab.config import model_from_data
    from homelab.pki import ClusterCA, create_ca
    from roles import grafana

    ca = create_ca("halfway CA", timedelta(hours=1))
    pair = ClusterCA(ca).issue("master-node", "127.0.0.1", timedelta(hours=1))
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    (tmp_path / "node.crt").write_bytes(pair.cert)
    (tmp_path / "node.key").write_bytes(pair.key)

    settings = Settings(listen_port=18080, https_port=18443)
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "default.conf").write_text(render_default_site(settings, TUNING, tls=default_tls))
    own = model_from_data("inventory data for master-node", grafana.Settings,
                          {"install": {"version": "11.6.0"}}).on_nginx(settings)
    (sites / "grafana.conf").write_text(grafana.render_site(own, "grafana.test", 4, node_tls=grafana_tls))
    if fronted_present:
        from roles.nginx import topology_fronts

        fronts = topology_fronts(tls_topology, tls_topology.serving("nginx")[0], settings)
        (sites / f"{FRONTED_SITE}.conf").write_text(render_fronted_site(fronts, str(tmp_path / "ca.crt")))
    conf = with_pair(render_nginx_conf(settings, TUNING, "tuning.yaml"), tmp_path).replace(SITES_DIR, str(sites))
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(["nginx", "-t", "-q", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_nginx
@pytest.mark.skipif(not shutil.which("prometheus-blackbox-exporter"), reason="needs Debian's prometheus-blackbox-exporter")
def test_blackboxs_redirect_probe_passes_on_the_redirect_to_https_and_fails_on_anything_else(tls_nginx, tls_topology):
    """The real blackbox with our modules: the probe of HTTP's port (Listener.redirect) expects
    nginx's redirect to https and does not follow it; a 200, or a redirect to plain http, fails."""
    from roles import blackbox
    from roles.nginx import REDIRECT_STATUS
    from roles.prometheus import render_config as prometheus_config
    from roles.prometheus import Settings as PrometheusSettings
    from tests.local_http import QuietHandler, serving
    from tests.loopback import free_port
    from tests.local_monitoring import _stop, blackbox_probe
    import yaml

    folder, _, settings, _ = tls_nginx
    # The module Prometheus gives the redirect listener's probe.
    [job] = [job for job in yaml.safe_load(prometheus_config(PrometheusSettings(), tls_topology))["scrape_configs"]
             if job["job_name"] == "blackbox"]
    redirect = tls_topology.endpoint("nginx", tls_topology.serving("nginx")[0], "redirect")
    [module] = [target["labels"]["module"] for target in job["static_configs"]
                if target["targets"] == [redirect.url("/healthz")]]
    (folder / "blackbox.yml").write_text(blackbox.render_config(blackbox.Settings(), tls=True))
    port = free_port()
    process = subprocess.Popen(["prometheus-blackbox-exporter", f"--config.file={folder / 'blackbox.yml'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    probe = functools.partial(blackbox_probe, port, module)

    class Elsewhere(QuietHandler):
        """A 200, or a redirect to plain http."""

        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else REDIRECT_STATUS)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

    try:
        passed = probe(f"http://127.0.0.1:{settings.listen_port}/healthz")
        # Not followed: the status is the redirect's, not the https site's 200.
        assert (passed["probe_success"], passed["probe_http_status_code"]) == (1, REDIRECT_STATUS)
        with serving(Elsewhere) as other:
            for path in ("/ok", "/healthz"):
                assert probe(f"http://127.0.0.1:{other.server_port}{path}")["probe_success"] == 0, path
    finally:
        _stop(process)
