"""The whole lab deployed with pki.tls on (issue 13): what the rendered-config tests promise, on nodes.

Deploys every node with `pki = TLS_ON` (as a user sets it in group_data/all.py); then every secured
web listener answers the control machine's login over https with the cluster CA, and refuses a
request without a login and plain http; nginx's exporter and mtail, which nginx fronts, admit only
their callers' certificates, and a flood of wrong logins there stalls nothing; nginx's site serves https without a login
on its https port, its http port answering only a redirect there; Prometheus scrapes every target (over https where secured)
and every health probe succeeds (nginx's http port: its redirect);
toy-redis speaks RESP only over TLS; a second run changes nothing; no secret of the vault shows in the
deploy's output, in a command line, in the journal or in a file others may read on any node. At the end the lab's own settings
(TLS off) are deployed back, as the other lab tests expect.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from datetime import datetime

import pytest
import redis
import requests

import roles.blackbox
import roles.pki
import roles.prometheus
from homelab.access import access
from homelab.alerts.catalog import (NOT_A_CALLER_STATUS, TLS_CHECK_JOB, UNVERIFIED_CERTIFICATE_STATUS,
                                    ScrapeTLSOrLoginFailing)
from homelab.alerts.render import load_thresholds
from homelab.lab.ssh import ssh_command
from homelab.topology import CONTROL, METRICS_PATH, ROLES
from homelab.types import SCHEME_PORTS, seconds
from homelab.vault import load_vault
from roles.toy_redis import PASSWORD_SECRET
from tests.conftest import run_pyinfra
from tests.hosts.conftest import wait_for_targets_up
from tests.hosts.test_prometheus import TARGETS_UP_WITHIN_S
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

# Run on each node with the secrets on standard input (never in a command line): where they show.
SECRET_SCAN = """
patterns=$(mktemp) && trap 'rm -f "$patterns"' EXIT && cat > "$patterns"
find / -xdev \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f -perm -o=r -size -20M -print0 \\
    | xargs -0r grep -lFf "$patterns" -- 2>/dev/null | sed 's/^/file: /'
ps -eo args | grep -Ff "$patterns" | sed 's/^/process: /'
journalctl -q --no-pager -o cat | grep -Ff "$patterns" | sed 's/^/journal: /'
true
"""


def secured_web_listeners(topology):
    """(role, listener, host) of every secured web listener the control machine may call (the
    firewall drops it elsewhere: blackbox takes requests from Prometheus only)."""
    from_control = {(host, inbound.role, inbound.listener) for host in topology.hosts
                    for inbound in topology.inbound(host) if CONTROL in inbound.parties}
    return [(role.name, listener, host) for role in ROLES for listener in role.listeners
            if listener.secured and listener.protocol == "http" and listener.login for host in topology.serving(role.name)
            if (host, role.name, listener.name) in from_control]


def test_the_deploy_with_tls_on_succeeds_and_a_second_changes_nothing(tls_lab, tls_data):
    assert tls_lab.returncode == 0 and not tls_lab.failed(), tls_lab.stderr[-4000:]
    again = run_pyinfra("deploys/all.py", *tls_data)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == [], f"a second run with TLS on changed: {again.changed()}"


def test_every_secured_listener_wants_https_and_a_login(tls_lab, tls_topology):
    checked = []
    for role, listener, host in secured_web_listeners(tls_topology):
        path = listener.health or METRICS_PATH
        where = f"{role} {listener.name} on {host}"
        operator = access(tls_topology, role, host, listener.name)
        assert operator.url().startswith("https://"), where
        assert operator.get(path, timeout=10).ok, f"{where}: the operator's login over https was refused"
        anonymous = requests.get(operator.url(path), verify=operator.verify, timeout=10)
        assert anonymous.status_code == 401, f"{where}: answered {anonymous.status_code} without a login"
        plain_url = tls_topology.endpoint(role, host, listener.name).url(path, "http")
        try:
            plain = requests.get(plain_url, timeout=10)
        except requests.ConnectionError:
            pass  # closed on a plain request: refused
        else:
            assert not plain.ok, f"{where}: answered plain http with {plain.status_code}"
        checked.append(where)
    assert len(checked) >= len(tls_topology.hosts), checked  # node_exporter on every node at least


def test_sites_serve_https_with_the_node_certificate_and_no_login(tls_lab, tls_topology):
    """nginx's site (Grafana's too, behind it): TLS without a login of ours; no plain http."""
    checked = []
    for role in ROLES:
        for listener in role.listeners:
            if not (listener.secured and listener.protocol == "http" and not listener.login and listener.health):
                continue
            for host in tls_topology.serving(role.name):
                site = access(tls_topology, role.name, host, listener.name)
                assert site.url().startswith("https://") and site.auth is None
                assert site.get(listener.health, timeout=10).ok, f"{role.name} on {host}"
                plain_url = tls_topology.endpoint(role.name, host, listener.name).url(listener.health, "http")
                try:
                    plain = requests.get(plain_url, timeout=10)
                except requests.ConnectionError:
                    pass
                else:
                    assert not plain.ok, f"{role.name} on {host}: answered plain http with {plain.status_code}"
                checked.append((role.name, host))
    assert ("nginx", tls_topology.hosts_of("nginx")[0]) in checked


def https_location(topology, host: str, path: str) -> str:
    """Where nginx's redirect on ``host`` sends ``path``: the site's https URL, without HTTPS's own port."""
    site = topology.endpoint("nginx", host)
    port = "" if site.port == SCHEME_PORTS["https"] else f":{site.port}"
    return f"https://{site.address}{port}{path}"


def test_nginx_http_port_answers_only_a_redirect_to_the_https_site(tls_lab, tls_topology):
    """With pki.tls on, nginx's plain port answers every request with a 301 to the same host and
    path on the site's https port, which serves it with the node's certificate (the cluster CA)."""
    for host in tls_topology.serving("nginx"):
        plain = tls_topology.endpoint("nginx", host, "redirect")
        site = access(tls_topology, "nginx", host)
        assert plain.port != site.endpoint.port and site.url().startswith("https://")
        for path in ("/healthz", "/no-such-page?x=1"):
            answer = requests.get(plain.url(path), allow_redirects=False, timeout=10)
            assert (answer.status_code, answer.headers.get("Location")) == (301, https_location(tls_topology, host, path)), \
                f"{host} {path}: {answer.status_code} {answer.headers}"
        followed = requests.get(plain.url("/healthz"), verify=site.verify, timeout=10)
        assert (followed.status_code, followed.text) == (200, "ok\n") and followed.history[0].status_code == 301


def test_mtail_and_the_exporter_listen_on_loopback_behind_nginx_and_strangers_are_dropped(tls_lab, tls_topology, lab):
    """What cannot do TLS itself (mtail; the exporter, on every release alike) listens on loopback
    only, nginx holds its public port; nodes that do not call those ports get no connection."""
    from roles.nginx import topology_fronts
    from tests.hosts.test_firewall import CONNECT_TIMEOUT_S, PROBE

    for host in tls_topology.serving("nginx"):
        fronts = topology_fronts(tls_topology, host, tls_topology.settings(host, "nginx"))
        assert set(fronts) == {"exporter", "mtail"}
        listening = subprocess.run(ssh_command(lab, host, "ss -Hltnp"), capture_output=True, text=True, timeout=60)
        assert listening.returncode == 0, listening.stderr
        for listener, front in fronts.items():
            local = [line.split()[3] for line in listening.stdout.splitlines()
                     if line.split()[3].endswith(f":{front.loopback_port}")]
            assert local == [f"127.0.0.1:{front.loopback_port}"], f"{listener} on {host} listens on {local}"
            public = [line for line in listening.stdout.splitlines() if line.split()[3].endswith(f":{front.public_port}")]
            assert public and all('"nginx"' in line for line in public), f"{listener}'s port on {host}: {public}"
        for inbound in tls_topology.inbound(host):
            if inbound.role != "nginx" or inbound.listener not in ("exporter", "mtail"):
                continue
            target = [tls_topology.address(host), inbound.port]
            for stranger in sorted(set(tls_topology.hosts) - set(inbound.callers) - {host}):
                probe = subprocess.run(
                    ssh_command(lab, stranger, " ".join(shlex.quote(part) for part in (
                        "python3", "-c", PROBE, json.dumps([target]), str(CONNECT_TIMEOUT_S)))),
                    capture_output=True, text=True, timeout=60)
                assert json.loads(probe.stdout) == ["timeout"], (stranger, host, inbound)


def client_cert_listeners(topology) -> list[tuple[str, str, str]]:
    """(role, listener, host) of every listener admitting its callers by certificate."""
    return [(role.name, listener.name, host) for role in ROLES for listener in role.listeners if listener.client_cert
            for host in topology.serving(role.name)]


def test_what_nginx_fronts_admits_only_the_callers_certificates(tls_lab, tls_topology, tmp_path):
    """The control machine's certificate gets the metrics; none (a login is no way in), another
    CA's, or the cluster CA's for a node that does not call the port, never reach the backend."""
    from datetime import timedelta

    from homelab.access import certificate_names
    from homelab.pki import ClusterCA, create_ca, load_ca

    listeners = client_cert_listeners(tls_topology)
    assert {(role, listener) for role, listener, _ in listeners} == {("nginx", "exporter"), ("nginx", "mtail")}
    for role, listener, host in listeners:
        operator = access(tls_topology, role, host, listener)
        where = f"{role} {listener} on {host}"
        answer = operator.get(METRICS_PATH, timeout=10)
        assert answer.status_code == 200 and "# TYPE" in answer.text, where
        vault = (tls_topology.data(host, "vault_file"), tls_topology.data(host, "vault_password_file"))
        [stranger] = [name for name in tls_topology.hosts
                      if name not in certificate_names(tls_topology, host, role, listener)][:1]
        unverified = UNVERIFIED_CERTIFICATE_STATUS
        refused = {"no certificate": (None, unverified), "a login": (None, unverified),
                   "another CA's": (ClusterCA(create_ca("stranger CA", timedelta(hours=1))).issue(
                       tls_topology.hosts_of("prometheus")[0], "127.0.0.1", timedelta(hours=1)), unverified),
                   f"{stranger}'s": (load_ca(*vault).issue(stranger, "127.0.0.1", timedelta(hours=1)), NOT_A_CALLER_STATUS)}
        for case, (issued, status) in refused.items():
            cert = None
            if issued:
                (tmp_path / "c.crt").write_bytes(issued.cert)
                (tmp_path / "c.key").write_bytes(issued.key)
                cert = (str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
            login = ("prometheus", "wrong") if case == "a login" else None
            got = requests.get(operator.url(METRICS_PATH), verify=operator.verify, cert=cert, auth=login, timeout=10)
            assert got.status_code == status, f"{where}, {case}: {got.status_code}"


def test_a_flood_of_wrong_logins_on_a_fronted_port_leaves_the_site_and_the_scrape_answering(tls_lab, tls_topology):
    """Wrong logins without a certificate, from the control machine for FLOOD_S (the hole bcrypt
    logins left: each held nginx's event loop ~80 ms): the site and the control machine's scrape
    answer quickly throughout, and nginx's own request counter shows it answered the flood."""
    from tests.flooder import Flooder, median_wait
    from tests.roles.test_nginx import ANSWER_WITHIN_S, FLOOD_AT_LEAST, FLOOD_S, FLOOD_THREADS

    [host] = tls_topology.serving("nginx")[:1]
    mtail, exporter = (access(tls_topology, "nginx", host, listener) for listener in ("mtail", "exporter"))
    site = access(tls_topology, "nginx", host)

    def requests_handled() -> float:
        # prometheus-nginx-exporter's copy of stub_status's "requests".
        text = exporter.get(METRICS_PATH, timeout=10).text
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith("nginx_http_requests_total ")))

    before = requests_handled()
    flood = Flooder(mtail.endpoint.port, {"guess": FLOOD_THREADS}, FLOOD_S, tls=True, address=mtail.endpoint.address)
    probes = {reaching.url(path): lambda reaching=reaching, path=path: reaching.get(path, timeout=10).status_code
              for reaching, path in ((site, "/healthz"), (mtail, METRICS_PATH))}
    waited = median_wait(flood, probes, FLOOD_S / 2, at_least=FLOOD_AT_LEAST)
    assert waited < ANSWER_WITHIN_S, f"requests waited a median {waited:.2f}s"
    assert requests_handled() - before >= FLOOD_AT_LEAST


def test_prometheus_scrapes_every_target_with_tls_on(tls_lab, tls_topology):
    active = wait_for_targets_up(tls_topology)
    down = {(t["labels"]["job"], t["labels"]["instance"]): t["lastError"] for t in active if t["health"] != "up"}
    assert active and not down, f"targets not up {TARGETS_UP_WITHIN_S}s after the deploy with TLS on: {down}"
    secured = {check.endpoint.instance for check in tls_topology.tls_checks()}
    scraped_https = {t["labels"]["instance"] for t in active if t["scrapeUrl"].startswith("https://")}
    assert secured <= scraped_https, f"secured but scraped without TLS: {secured - scraped_https}"


def test_every_health_probe_succeeds_with_tls_on(tls_lab, tls_topology):
    """blackbox's probes as Prometheus records them: over https where the listener serves it (the
    instance label says so), and nginx's plain port answering its redirect to https."""
    probes = {probe.instance for probe in tls_topology.health_probes()}
    assert {probe.instance for probe in tls_topology.health_probes() if probe.redirect}, "no redirect probed"
    prometheus = access(tls_topology, "prometheus")
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while True:
        results = prometheus.get("/api/v1/query", params={"query": f'probe_success{{job="{roles.prometheus.PROBE_JOB}"}}'},
                                 timeout=10).json()["data"]["result"]
        found = {result["metric"]["instance"]: result["value"][1] for result in results}
        if all(found.get(instance) == "1" for instance in probes) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert {instance: found.get(instance) for instance in probes} == dict.fromkeys(probes, "1")


def test_status_shows_each_secured_listeners_tls_check_up(tls_lab, tls_topology):
    from homelab.status import collect

    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while True:
        rows = {row.instance: row.state for row in collect(tls_topology).rows if row.service == TLS_CHECK_JOB}
        if set(rows.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert rows == {check.endpoint.instance: "up" for check in tls_topology.tls_checks()}


def test_toy_redis_speaks_resp_only_over_tls(tls_lab, tls_topology):
    [host] = tls_topology.hosts_of("toy_redis")[:1]
    password = load_vault(tls_topology.data(host, "vault_file"),
                          tls_topology.data(host, "vault_password_file"))[PASSWORD_SECRET]
    over_tls = access(tls_topology, "toy_redis", host, "resp")
    with over_tls.redis(password=password, socket_timeout=10) as client:
        assert client.ping()
    endpoint = tls_topology.endpoint("toy_redis", host, "resp")
    with redis.Redis(host=endpoint.address, port=endpoint.port, password=password, socket_timeout=5,
                     socket_connect_timeout=5) as plain, pytest.raises(redis.RedisError):
        plain.ping()


def test_no_secret_shows_in_output_command_lines_journal_or_readable_files(tls_lab, tls_topology, lab):
    [host] = tls_topology.hosts[:1]
    vault = load_vault(tls_topology.data(host, "vault_file"), tls_topology.data(host, "vault_password_file"))
    # A multi-line secret (the CA key) is looked for by its longest line.
    needles = {name: max(str(value).splitlines(), key=len) for name, value in vault.items()}
    deploy_output = tls_lab.stderr + json.dumps(tls_lab.report)
    assert not [name for name, needle in needles.items() if needle in deploy_output]
    for node in tls_topology.hosts:
        scan = subprocess.run(ssh_command(lab, node, "sh -c " + shlex.quote(SECRET_SCAN)), capture_output=True,
                              input="\n".join(sorted(set(needles.values()))) + "\n", text=True, timeout=300)
        assert scan.returncode == 0, f"{node}: {scan.stderr}"
        # Name where, never what: the finding must not print the secret itself.
        found = [line.split(": ", 1)[0] + ": " + (line.split(": ", 1)[1] if line.startswith("file") else "(hidden)")
                 for line in scan.stdout.splitlines()]
        assert not found, f"{node}: secrets of the vault found in {found}"


def test_a_restore_puts_the_tls_identity_back_as_roles_pki_leaves_it(tls_lab, tls_topology, lab, tmp_path):
    from homelab.backup.parts import Certificates
    from homelab.backup.run import _restore_one, remotes

    # Only this part, as `homelab restore` puts it back (a whole backup is tests/hosts/test_backup.py's).
    [node] = tls_topology.hosts_of("loki")[:1]
    with remotes(tls_topology) as remote:
        Certificates().backup(tls_topology, node, remote(node), tmp_path)
        _restore_one(remote(node), Certificates(), tmp_path, {})
    script = "".join(f"stat -c '%n %U:%G %a' {shlex.quote(tls_file.path)}; " for tls_file in roles.pki.IDENTITY)
    stats = subprocess.run(ssh_command(lab, node, "sh -c " + shlex.quote(script)), capture_output=True, text=True,
                           timeout=60)
    assert stats.stdout.split("\n")[:-1] == [f"{tls_file.path} {tls_file.owner} {int(tls_file.mode, 8):o}"
                                             for tls_file in roles.pki.IDENTITY], stats.stderr
    # node_exporter still reads its web config and the key (as a member of the pki group): it serves its login.
    assert access(tls_topology, "node_exporter", node, "metrics").get(METRICS_PATH, timeout=10).ok


def test_toy_redis_backs_up_over_tls(tls_lab, tls_topology, tmp_path):
    """`homelab backup`'s toy-redis part asks for the AOF rewrite over the RESP port, which speaks
    only TLS with pki.tls on; the copy holds what was written before it."""
    from homelab.backup.parts import ToyRedis, local
    from homelab.backup.run import remotes

    [node] = tls_topology.hosts_of("toy_redis")
    part = ToyRedis()
    assert part.skip_reason(tls_topology, node, None) is None, "the lab's toy-redis keeps an AOF"
    with part.client(tls_topology, node) as client:
        client.set("backed-up-over-tls", "yes")
    with remotes(tls_topology) as remote:
        part.backup(tls_topology, node, remote(node), tmp_path)
    assert b"backed-up-over-tls" in local(tmp_path, part._aof_path()).read_bytes()


def test_turning_tls_off_leaves_no_key_on_the_nodes_and_no_tls_alert(tls_lab, lab, deploy_tls_off):
    """Last: the lab's settings deployed back. No key, certificate, web config, password or expiry
    metric of the TLS run stays on a node, and a rerun changes nothing. Prometheus, restarted without
    the tls-check job, still shows that job's last samples (no stale markers across a restart), yet
    ScrapeTLSOrLoginFailing ignores them once they are older than its fresh_within."""
    off = deploy_tls_off()
    assert off.returncode == 0 and not off.failed(), off.stderr[-4000:]
    for node in LAB_TOPOLOGY.hosts:
        textfiles = LAB_TOPOLOGY.settings(node, "node_exporter").textfile_directory
        paths = [roles.pki.TLS_DIR, f"{textfiles}/{roles.pki.EXPIRY_METRICS}",
                 roles.prometheus.WEB_PASSWORD_FILE, roles.blackbox.WEB_PASSWORD_FILE]
        script = "".join(f"test -e {shlex.quote(path)} && echo {shlex.quote(path)}; " for path in paths)
        script += f"getent group {roles.pki.GROUP}; true"
        left = subprocess.run(ssh_command(lab, node, "sh -c " + shlex.quote(script)), capture_output=True,
                              text=True, timeout=60)
        assert left.returncode == 0 and left.stdout == "", f"{node}: TLS off left {left.stdout.split()}"
    # nginx's site is back on plain http, without a redirect, and nothing listens on the TLS run's https port.
    for host in LAB_TOPOLOGY.serving("nginx"):
        site = LAB_TOPOLOGY.access("nginx", host)
        assert site.url().startswith("http://")
        answer = site.get("/healthz", allow_redirects=False)
        assert (answer.status_code, answer.text) == (200, "ok\n"), f"{host}: {answer.status_code} {answer.headers}"
        https_port = LAB_TOPOLOGY.settings(host, "nginx").https_port
        listening = subprocess.run(ssh_command(lab, host, f"ss -Hltn 'sport = :{https_port}'"), capture_output=True,
                                   text=True, timeout=60)
        assert listening.returncode == 0 and listening.stdout == "", f"{host}: {listening.stdout}{listening.stderr}"

    alert = load_thresholds().alerts.ScrapeTLSOrLoginFailing
    for host in LAB_TOPOLOGY.hosts_of("prometheus"):
        prometheus = LAB_TOPOLOGY.access("prometheus", host)

        def query(expr: str) -> list:
            answer = prometheus.get("/api/v1/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", answer
            return answer["data"]["result"]

        started = prometheus.get("/api/v1/status/runtimeinfo", timeout=10).json()["data"]["startTime"]
        evaluation = seconds(LAB_TOPOLOGY.settings(host, "prometheus").evaluation_interval)
        # From when the leftovers are older than fresh_within (and a rule evaluation saw them so):
        # the TLS run's process wrote its own ALERTS before, which linger as its samples do.
        aged = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() + seconds(alert.fresh_within) + evaluation
        time.sleep(max(0.0, aged + 3 * evaluation - time.time()))
        leftovers = query(f'probe_http_status_code{{job="{TLS_CHECK_JOB}"}}')
        assert leftovers, (f"{host}: no {TLS_CHECK_JOB} samples left to test {alert.name} against: Prometheus "
                           f"was restarted before the deploy's end by more than the 5-minute lookback")
        since_aged = f"{int(time.time() - aged)}s"
        assert query(f'count_over_time(ALERTS{{alertname="{alert.name}"}}[{since_aged}])') == [], \
            f"{host}: {alert.name} pending or firing on the TLS run's leftovers in the last {since_aged}"
    again = run_pyinfra("deploys/all.py")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == [], f"a second run with TLS off changed: {again.changed()}"
