"""roles/pki with pki.tls on: exporter-toolkit web configs, and Prometheus and blackbox reaching
secured listeners over https with the cluster CA and their own logins (rendered, not deployed)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from homelab.access import OPERATOR, callers, certificate_names, password_secret
from homelab.config import ConfigError
from homelab.pki import CA_KEY_SECRET, ClusterCA, create_ca
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.vault import load_vault
from roles import blackbox
from roles.pki import CA_FILE, CERT_FILE, KEY_FILE, Settings, expiry_metrics
from roles.pki.web import (bcrypt_hash, bcrypt_salt, check_web_config, hash_cache_file, render_web_config,
                           salt_key)
from roles.prometheus import WEB_PASSWORD_FILE, render_config
from roles.prometheus import Settings as PrometheusSettings
from tests.conftest import run_pyinfra
from tests.local_monitoring import blackbox_probe

REPO = Path(__file__).resolve().parents[2]
VAULT = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")
# Salts for hashes made up in a test (a deploy keys them with its vault's CA key).
TEST_SALT_KEY = salt_key("a CA key for tests")


def lab_login_hash(user: str) -> str:
    """The hash a deploy with the lab vault writes for ``user`` (roles.pki.web.login_hash)."""
    return bcrypt_hash(user, VAULT[password_secret(user)], salt_key(VAULT[CA_KEY_SECRET]))


def test_the_web_config_passes_promtool_and_admits_each_caller_with_its_vault_password(tls_topology):
    users = {user: lab_login_hash(user) for user in callers(tls_topology, "prometheus")}
    text = render_web_config(users)
    check_web_config(text)
    config = yaml.safe_load(text)
    assert config["tls_server_config"] == {"cert_file": CERT_FILE, "key_file": KEY_FILE, "min_version": "TLS12"}
    assert set(config["basic_auth_users"]) == {"operator", "prometheus", "blackbox", "grafana"}
    for user, hashed in config["basic_auth_users"].items():
        assert bcrypt.checkpw(VAULT[password_secret(user)].encode(), hashed.encode())
        assert not bcrypt.checkpw(b"not-the-password", hashed.encode())
        assert VAULT[password_secret(user)] not in text
    # The same file on every deploy: a rerun changes nothing.
    assert render_web_config({user: lab_login_hash(user) for user in users}) == text


def test_a_login_hash_is_the_same_on_every_run_and_its_salt_needs_the_ca_key():
    password = VAULT[password_secret(OPERATOR)]
    key = salt_key(VAULT[CA_KEY_SECRET])
    hashed = bcrypt_hash(OPERATOR, password, key)
    # Made again (not remembered), the same hash: a rerun changes nothing.
    assert bcrypt.hashpw(password.encode(), bcrypt_salt(OPERATOR, password, key)).decode() == hashed
    # Whoever reads the hash on a node and guesses the password (and knows the user) still cannot
    # rebuild its salt without the CA key: a guess costs a whole bcrypt, not an HMAC.
    salt = bcrypt_salt(OPERATOR, password, key)
    assert hashed.encode().startswith(salt)
    assert bcrypt_salt(OPERATOR, password, salt_key("another CA key")) != salt
    assert bcrypt_hash(OPERATOR, password, salt_key("another CA key")) != hashed


def test_a_login_hash_is_made_once_per_control_machine_and_anew_for_a_new_password_or_ca(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = []
    real_hashpw = bcrypt.hashpw
    monkeypatch.setattr(bcrypt, "hashpw", lambda *args: made.append(args) or real_hashpw(*args))
    bcrypt_hash.cache_clear()
    hashed = bcrypt_hash(OPERATOR, "first password", TEST_SALT_KEY)
    assert oct(hash_cache_file().stat().st_mode & 0o777) == "0o600"
    bcrypt_hash.cache_clear()  # the next deploy run
    assert bcrypt_hash(OPERATOR, "first password", TEST_SALT_KEY) == hashed
    assert len(made) == 1
    changed = bcrypt_hash(OPERATOR, "second password", TEST_SALT_KEY)
    assert bcrypt.checkpw(b"second password", changed.encode()) and not bcrypt.checkpw(b"first password", changed.encode())
    assert bcrypt_hash(OPERATOR, "first password", salt_key("a new CA key")) not in (hashed, changed)
    assert len(made) == 3
    bcrypt_hash.cache_clear()


def test_a_broken_web_config_is_refused_before_it_is_sent():
    with pytest.raises(ConfigError) as error:
        check_web_config(render_web_config({"operator": "not a bcrypt hash"}).replace("TLS12", "TLS99"))
    assert "promtool check web-config failed" in str(error.value)


WEB_CONFIG_DEPLOY = """
from io import BytesIO

from pyinfra import host

from roles.pki.web import checked_web_config

checked_web_config(name="web config", dest=host.data.get("dest"), content=BytesIO(host.data.get("text").encode()),
                   group="root")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="writes a root-owned file through pyinfra's @local connector")
def test_a_web_config_is_checked_when_it_would_change_and_a_failing_one_is_never_sent(tmp_path):
    """promtool runs (here behind a wrapper that counts) for a text the node does not hold yet, not
    on a rerun that changes nothing; a text it refuses fails the deploy and leaves the file alone."""
    real = shutil.which("promtool")
    calls = tmp_path / "promtool-calls"
    wrapper = tmp_path / "bin" / "promtool"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\nexec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    deploy_file = tmp_path / "deploy.py"
    deploy_file.write_text(WEB_CONFIG_DEPLOY)
    dest = tmp_path / "web.yml"
    good = render_web_config({"operator": bcrypt_hash("operator", "some password", TEST_SALT_KEY)})

    def deploy(text: str):
        return run_pyinfra(str(deploy_file), "--data", f"dest={dest}", "--data", f"text={text}", inventory="@local",
                           env={"PATH": f"{wrapper.parent}:{os.environ['PATH']}"})

    def checks() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    first = deploy(good)
    assert first.returncode == 0 and dest.read_text() == good and checks() == 1, first.stderr[-2000:]
    rerun = deploy(good)
    assert rerun.returncode == 0 and rerun.changed() == [] and checks() == 1, rerun.stderr[-2000:]
    refused = deploy(good.replace("TLS12", "TLS99"))
    assert refused.returncode != 0 and "promtool check web-config failed" in refused.stderr
    assert dest.read_text() == good and checks() == 2


def test_prometheus_scrapes_secured_listeners_over_https_with_its_own_login(tls_topology):
    config = yaml.safe_load(render_config(PrometheusSettings(), tls_topology))
    client = {"scheme": "https", "tls_config": {"ca_file": CA_FILE},
              "basic_auth": {"username": "prometheus", "password_file": WEB_PASSWORD_FILE}}
    for job in tls_topology.scrape_jobs():
        [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == job.name]
        listener = ROLE_BY_NAME[job.role].listener(ROLE_BY_NAME[job.role].scrape[job.name])
        # A secured listener without a login of ours (Loki) gets TLS with the CA and no credentials;
        # one admitting its callers by certificate (what nginx fronts), Prometheus's node certificate.
        if listener.client_cert:
            wanted = {**client, "basic_auth": None,
                      "tls_config": {"ca_file": CA_FILE, "cert_file": CERT_FILE, "key_file": KEY_FILE}}
        elif listener.secured:
            wanted = client if listener.login else {**client, "basic_auth": None}
        else:
            wanted = dict.fromkeys(client)
        assert {key: scrape.get(key) for key in client} == wanted, job.name
    assert any(ROLE_BY_NAME[job.role].listener(ROLE_BY_NAME[job.role].scrape[job.name]).client_cert
               for job in tls_topology.scrape_jobs())
    [alerting] = config["alerting"]["alertmanagers"]
    assert {key: alerting[key] for key in client} == client


def test_blackbox_sends_its_login_only_to_secured_listeners_over_https(tls_topology):
    config = yaml.safe_load(render_config(PrometheusSettings(), tls_topology))
    [probes] = [s for s in config["scrape_configs"] if s["job_name"] == "blackbox"]
    modules = yaml.safe_load(blackbox.render_config(blackbox.Settings(), tls=True))["modules"]
    health = blackbox.Settings().health_module
    for target in probes["static_configs"]:
        [url] = target["targets"]
        module = modules[target["labels"]["module"]]
        # The label names the host where the URL has its address, with the same scheme.
        assert target["labels"]["instance"].split("://")[0] == url.split("://")[0]
        if url.startswith("https://"):
            assert module["http"]["tls_config"] == {"ca_file": CA_FILE}
            assert module["http"]["basic_auth"] == {"username": blackbox.WEB_USER,
                                                    "password_file": blackbox.WEB_PASSWORD_FILE}
        else:
            # Plain: the health module, or on a port that only redirects, the probe of that redirect.
            assert target["labels"]["module"] in (health, blackbox.redirect_module(health))
            assert "basic_auth" not in module.get("http", {})
    assert any(t["targets"][0].startswith("https://") for t in probes["static_configs"])
    redirects = {t["targets"][0] for t in probes["static_configs"] if t["labels"]["module"] == blackbox.redirect_module(health)}
    assert redirects == {tls_topology.endpoint("nginx", host, "redirect").url("/healthz")
                         for host in tls_topology.serving("nginx")}


def test_with_tls_off_nothing_changes_in_the_configs():
    lab = Topology.load(REPO / "inventory" / "lab.py")
    assert "https" not in render_config(PrometheusSettings(), lab)
    assert blackbox.render_config(blackbox.Settings()) == blackbox.render_config(blackbox.Settings(), tls=False)
    assert "_tls" not in blackbox.render_config(blackbox.Settings())


def test_the_expiry_metrics_carry_the_margin_the_deploy_rotates_at():
    text = expiry_metrics(1_900_000_000, 30 * 86400)
    assert f'homelab_tls_cert_expiry_timestamp_seconds{{file="{CERT_FILE}"}} 1900000000' in text
    assert "homelab_tls_cert_rotation_margin_seconds 2592000" in text
    assert Settings().rotation_margin == "30d"


def test_prometheus_has_blackbox_check_every_secured_listener_for_tls_and_its_port(tls_topology):
    from homelab.alerts.catalog import CHECK_LOGIN, CHECK_PORT, TLS_CHECK_JOB

    config = yaml.safe_load(render_config(PrometheusSettings(), tls_topology))
    [job] = [s for s in config["scrape_configs"] if s["job_name"] == TLS_CHECK_JOB]
    modules = yaml.safe_load(blackbox.render_config(blackbox.Settings(), tls=True))["modules"]
    checked = {}
    for target in job["static_configs"]:
        labels = target["labels"]
        assert labels["module"] in modules
        checked.setdefault(labels["instance"], {})[labels["check"]] = (target["targets"][0], modules[labels["module"]])
    secured = {tls_topology.endpoint(role.name, host, listener.name)
               for role in ROLE_BY_NAME.values() for listener in role.listeners
               if listener.secured and listener.protocol == "http"
               # what serves metrics: behind our login, or scraped (a site without a login is not checked)
               and (listener.login or listener.name in role.scrape.values())
               for host in tls_topology.serving(role.name)}
    assert {endpoint.instance for endpoint in secured} >= {
        tls_topology.endpoint("nginx", host, listener).instance for host in tls_topology.serving("nginx")
        for listener in ("exporter", "mtail")}
    assert set(checked) == {endpoint.instance for endpoint in secured}
    for check in tls_topology.tls_checks():
        endpoint = check.endpoint
        (login_url, login), (port_target, port) = checked[endpoint.instance][CHECK_LOGIN], checked[endpoint.instance][CHECK_PORT]
        assert login_url == endpoint.url("/metrics", "https") and port_target == endpoint.netloc and port["prober"] == "tcp"
        if ROLE_BY_NAME[check.role].listener(check.listener).client_cert:
            # What nginx fronts: blackbox's node certificate, which nginx admits; no password sent.
            assert login["http"]["tls_config"] == {"ca_file": CA_FILE, "cert_file": CERT_FILE, "key_file": KEY_FILE}
            assert "basic_auth" not in login["http"]
            assert set(tls_topology.hosts_of("blackbox")) <= set(
                certificate_names(tls_topology, endpoint.host, check.role, check.listener)), check
        else:
            # Its login, which the listener's web config admits.
            assert login["http"]["basic_auth"]["username"] == blackbox.WEB_USER
            assert "blackbox" in callers(tls_topology, check.role), check.role


needs_exporters = pytest.mark.skipif(
    not (shutil.which("prometheus-blackbox-exporter") and shutil.which("prometheus-node-exporter")),
    reason="needs Debian's prometheus-blackbox-exporter and prometheus-node-exporter")


@needs_exporters
def test_blackbox_tells_a_refused_login_and_a_refused_certificate_from_a_listener_that_is_down(tmp_path):
    """The series ScrapeTLSOrLoginFailing reads, from the real blackbox with our modules probing the
    real node_exporter with our web config: 401 for a wrong password; no status but an open port
    for a certificate from another CA; neither for a closed port. `homelab status` names each case."""
    from homelab.alerts.catalog import CHECK_LOGIN, CHECK_PORT, LOGIN_REFUSED_STATUS, TLS_CHECK_JOB, ScrapeTLSOrLoginFailing
    from homelab.status import tls_check_states
    from tests.loopback import free_port, wait_for
    from tests.local_monitoring import _stop

    ca, stranger = create_ca("cluster", timedelta(hours=1)), create_ca("stranger", timedelta(hours=1))
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    password = tmp_path / "password"
    password.write_text(VAULT[password_secret(blackbox.WEB_USER)])
    modules = blackbox.render_config(blackbox.Settings(), tls=True)
    (tmp_path / "blackbox.yml").write_text(modules.replace(CA_FILE, str(tmp_path / "ca.crt"))
                                           .replace(blackbox.WEB_PASSWORD_FILE, str(password)))
    health = blackbox.Settings().health_module
    exporter_port, blackbox_port = free_port(), free_port()
    processes = [subprocess.Popen(["prometheus-blackbox-exporter", f"--config.file={tmp_path / 'blackbox.yml'}",
                                   f"--web.listen-address=127.0.0.1:{blackbox_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    probe = functools.partial(blackbox_probe, blackbox_port)

    def serve(issuer, user_password: str):
        pair = ClusterCA(issuer).issue("node", "127.0.0.1", timedelta(hours=1))
        (tmp_path / "node.crt").write_bytes(pair.cert)
        (tmp_path / "node.key").write_bytes(pair.key)
        (tmp_path / "web.yml").write_text(render_web_config({blackbox.WEB_USER: bcrypt_hash(blackbox.WEB_USER, user_password, TEST_SALT_KEY)})
                                          .replace(CERT_FILE, str(tmp_path / "node.crt")).replace(KEY_FILE, str(tmp_path / "node.key")))
        process = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{exporter_port}",
                                    f"--web.config.file={tmp_path / 'web.yml'}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        wait_for(lambda: probe(blackbox.PORT_MODULE, f"127.0.0.1:{exporter_port}")["probe_success"] == 1, 20,
                 "node_exporter to listen", interval=0.2)
        return process

    url = f"https://127.0.0.1:{exporter_port}/metrics"

    def status_state() -> str:
        """What `homelab status` shows for the listener, from both probes as Prometheus answers them."""
        probes = {CHECK_LOGIN: probe(blackbox.tls_module(health), url),
                  CHECK_PORT: probe(blackbox.PORT_MODULE, f"127.0.0.1:{exporter_port}")}
        samples = [{"metric": {"__name__": name, "job": TLS_CHECK_JOB, "check": check, "instance": "node:port"},
                    "value": [0, str(metrics[name])]}
                   for check, metrics in probes.items() for name in ("probe_success", "probe_http_status_code")
                   if name in metrics]
        return tls_check_states(samples)["node:port"]

    try:
        serve(ca, password.read_text())
        assert probe(blackbox.tls_module(health), url)["probe_http_status_code"] == 200
        assert status_state() == "up"
        _stop(processes.pop())
        serve(ca, "another password")
        assert probe(blackbox.tls_module(health), url)["probe_http_status_code"] == LOGIN_REFUSED_STATUS
        assert status_state() == ScrapeTLSOrLoginFailing.REASONS["login"]
        _stop(processes.pop())
        serve(stranger, password.read_text())
        assert probe(blackbox.tls_module(health), url)["probe_http_status_code"] == 0
        assert probe(blackbox.PORT_MODULE, f"127.0.0.1:{exporter_port}")["probe_success"] == 1
        assert status_state() == ScrapeTLSOrLoginFailing.REASONS["tls"]
        _stop(processes.pop())
        assert probe(blackbox.tls_module(health), url)["probe_http_status_code"] == 0
        assert probe(blackbox.PORT_MODULE, f"127.0.0.1:{exporter_port}")["probe_success"] == 0
        assert status_state() == "down"
    finally:
        for process in processes:
            _stop(process)


def test_alertmanager_calls_the_relay_over_https_with_the_cluster_ca_and_keeps_its_bearer_token(tls_topology, tmp_path):
    from roles import alertmanager

    settings = alertmanager.Settings()
    config = yaml.safe_load(alertmanager.render_config(settings, tls_topology))
    [relay] = [receiver for receiver in config["receivers"] if receiver["name"] == alertmanager.RELAY_RECEIVER]
    [hook] = relay["webhook_configs"]
    assert hook["url"] == tls_topology.endpoint("alert_relay").url(alertmanager.WEBHOOK_PATH, "https")
    assert hook["http_config"] == {"tls_config": {"ca_file": CA_FILE},
                                   "authorization": {"type": "Bearer", "credentials_file": settings.webhook_token_file}}
    staged = tmp_path / "alertmanager.yml"
    staged.write_text(alertmanager.render_config(settings, tls_topology))
    if shutil.which("amtool"):
        check = subprocess.run(["amtool", "check-config", str(staged)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    lab = Topology.load(REPO / "inventory" / "lab.py")
    assert "tls_config" not in alertmanager.render_config(settings, lab)


def test_the_relays_config_names_the_web_config_only_with_tls(tls_topology, tmp_path):
    from roles import alert_relay
    from tests.alert_relay.conftest import RELAY

    assert "web_config_file" not in alert_relay.render_config(alert_relay.Settings())
    text = alert_relay.render_config(alert_relay.Settings(), web_config_file="/etc/homelab/tls/alert_relay.yml")
    assert yaml.safe_load(text.split("\n", 2)[2])["web_config_file"] == "/etc/homelab/tls/alert_relay.yml"
    # The relay's own check loads the certificate and logins it names, as the deploy runs it.
    config = yaml.safe_load(text.split("\n", 2)[2])
    pair = ClusterCA(create_ca("check", timedelta(hours=1))).issue("relay", "127.0.0.1", timedelta(hours=1))
    (tmp_path / "node.crt").write_bytes(pair.cert)
    (tmp_path / "node.key").write_bytes(pair.key)
    users = {user: lab_login_hash(user) for user in callers(tls_topology, "alert_relay")}
    (tmp_path / "web.yml").write_text(render_web_config(users).replace(CERT_FILE, str(tmp_path / "node.crt"))
                                      .replace(KEY_FILE, str(tmp_path / "node.key")))
    for key in ("routes_file",):
        config[key] = str(REPO / "alerts/routes.yaml")
    for key in alert_relay.TOKEN_FILES:
        (tmp_path / key).write_text("token\n")
        (tmp_path / key).chmod(0o600)
        config[key] = str(tmp_path / key)
    config.update(queue_path=str(tmp_path / "queue.sqlite3"), web_config_file=str(tmp_path / "web.yml"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    check = subprocess.run([str(RELAY), "--check-config", str(tmp_path / "config.yaml")], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stderr
    (tmp_path / "node.key").write_bytes(b"not a key")
    check = subprocess.run([str(RELAY), "--check-config", str(tmp_path / "config.yaml")], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 2 and "web_config_file" in check.stderr


@pytest.mark.parametrize("keep_plain", [False, True], ids=["tls-only", "plain-port-kept"])
def test_toy_redis_with_the_roles_tls_config_serves_resp_and_metrics_only_over_tls(tls_topology, tmp_path, keep_plain):
    """The config roles/toy_redis renders with pki.tls, run by the real server: RESP over TLS on
    `port` (no plain listener unless group data keeps `plain_port`, where the password is still
    asked), the metrics over https with the web config's logins."""
    import redis

    from roles import toy_redis
    from tests.loopback import free_port
    from tests.toy_redis.conftest import ToyRedis

    ca = create_ca("toy test CA", timedelta(hours=1))
    pair = ClusterCA(ca).issue("toy", "127.0.0.1", timedelta(hours=1))
    files = {CA_FILE: ca.cert, CERT_FILE: pair.cert, KEY_FILE: pair.key,
             toy_redis.REQUIREPASS_PATH: VAULT[toy_redis.PASSWORD_SECRET].encode() + b"\n"}
    users = {user: lab_login_hash(user) for user in callers(tls_topology, "toy_redis")}
    web = "/etc/homelab/tls/toy_redis.yml"
    files[web] = render_web_config(users).encode()
    settings = toy_redis.Settings(port=free_port(), metrics_port=free_port(), bind="127.0.0.1", metrics_bind="127.0.0.1",
                                  plain_port=free_port() if keep_plain else None)
    text = toy_redis.render_config(settings, web)
    for node_path, content in files.items():
        local = tmp_path / node_path.rsplit("/", 1)[1]
        local.write_bytes(content)
        local.chmod(0o600)
        text = text.replace(node_path, str(local))
    text = text.replace(toy_redis.DATA_DIR, str(tmp_path)).replace(toy_redis.LOG_FILE, str(tmp_path / "toy.log"))
    (tmp_path / "toy-redis.yaml").write_text(text)
    server = ToyRedis(tmp_path, config=tmp_path / "toy-redis.yaml").start()
    try:
        assert (server.port, server.tls_port) == (settings.plain_port or 0, settings.port)
        if keep_plain:
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(host="127.0.0.1", port=settings.plain_port, socket_timeout=5).get("k")
            assert redis.Redis(host="127.0.0.1", port=settings.plain_port, password=VAULT[toy_redis.PASSWORD_SECRET],
                               socket_timeout=5).ping()
        secure = redis.Redis(host="127.0.0.1", port=settings.port, password=VAULT[toy_redis.PASSWORD_SECRET],
                             ssl=True, ssl_ca_certs=str(tmp_path / "ca.crt"), socket_timeout=10)
        assert secure.ping()
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(host="127.0.0.1", port=settings.port, password=VAULT[toy_redis.PASSWORD_SECRET],
                        socket_timeout=5).ping()
        metrics = f"https://127.0.0.1:{settings.metrics_port}/metrics"
        ca_file = str(tmp_path / "ca.crt")
        assert requests.get(metrics, verify=ca_file, timeout=10).status_code == 401
        login = ("prometheus", VAULT[password_secret("prometheus")])
        assert requests.get(metrics, verify=ca_file, auth=login, timeout=10).status_code == 200
    finally:
        server.stop()


def test_the_control_machine_reaches_toy_redis_resp_over_tls_with_the_ca_and_no_web_login(tls_topology):
    [host_name] = tls_topology.serving("toy_redis")[:1]
    access = tls_topology.access("toy_redis", host_name, "resp")
    assert access.tls and access.ca_file is not None and access.auth is None
    client = access.redis(password="x")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"]) == (access.endpoint.address, access.endpoint.port)
    assert kwargs["ssl_ca_certs"] == str(access.ca_file)
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    # The RESP port is no web endpoint: blackbox checks only the metrics listener.
    assert {check.listener for check in tls_topology.tls_checks() if check.role == "toy_redis"} == {"metrics"}


def test_grafanas_datasources_use_https_with_the_ca_and_its_login_where_the_listener_is_secured(tls_topology):
    from roles import grafana

    ca_pem = (REPO / "secrets/lab.ca.crt").read_text()
    text = grafana.render_datasources(**grafana.datasources(tls_topology, ca_pem))
    by_uid = {source["uid"]: source for source in yaml.safe_load(text)["datasources"]}
    for role in ("prometheus", "alertmanager", "loki"):
        source, endpoint = by_uid[role], tls_topology.endpoint(role)
        if ROLE_BY_NAME[role].listener("http").secured and not ROLE_BY_NAME[role].listener("http").login:
            # TLS with the CA, no login of ours (Loki has none).
            assert source["url"] == endpoint.url(scheme="https") and "basicAuth" not in source
            assert source["jsonData"]["tlsAuthWithCACert"] is True
            assert source["secureJsonData"] == {"tlsCACert": ca_pem.strip() + "\n"}
        elif ROLE_BY_NAME[role].listener("http").secured:
            assert source["url"] == endpoint.url(scheme="https")
            assert (source["basicAuth"], source["basicAuthUser"]) == (True, grafana.WEB_USER)
            assert source["jsonData"]["tlsAuthWithCACert"] is True
            assert source["secureJsonData"] == {"basicAuthPassword": f"${grafana.WEB_PASSWORD_ENV}",
                                                "tlsCACert": ca_pem.strip() + "\n"}
            assert grafana.WEB_USER in callers(tls_topology, role)
        else:
            assert source["url"] == endpoint.url() and "basicAuth" not in source
    assert by_uid["prometheus"]["jsonData"]["timeInterval"] == "15s"
    assert by_uid["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    # The password itself is in neither the file nor a command line: the unit's environment file.
    assert VAULT[password_secret(grafana.WEB_USER)] not in text
    with pytest.raises(ConfigError) as error:
        grafana.datasources(tls_topology, None)
    assert "vault_file" in str(error.value) and "serves TLS" in str(error.value)


def test_loki_serves_tls_with_the_node_certificate_and_its_clients_verify_it_with_the_ca(tls_topology):
    """Loki, Promtail and Alloy cannot be installed here (Grafana Labs' repository is unreachable):
    their rendered configs follow pki.tls and the topology's Loki endpoint, both ways."""
    from roles import alloy, loki, promtail
    from roles.loki import loki_client

    lab = Topology.load(REPO / "inventory" / "lab.py")
    pinned = {"install": {"version": "3.5.0"}}
    for topology, tls in ((tls_topology, True), (lab, False)):
        endpoint = topology.endpoint("loki")
        url, ca_file = loki_client(topology)
        assert (url, ca_file) == ((endpoint.url(scheme="https"), CA_FILE) if tls else (endpoint.url(), None))
        server = yaml.safe_load(loki.render_config(loki.Settings(**pinned), tls))["server"]
        assert server.get("http_tls_config") == ({"cert_file": CERT_FILE, "key_file": KEY_FILE} if tls else None)
        assert server["http_listen_port"] == endpoint.port
        [push] = yaml.safe_load(promtail.render_config(promtail.Settings(**pinned), "worker-node-12", url, ca_file))["clients"]
        assert push == ({"url": f"{url}/loki/api/v1/push", "tls_config": {"ca_file": CA_FILE}} if tls
                        else {"url": f"{url}/loki/api/v1/push"})
        river = alloy.render_config(alloy.Settings(**pinned), "worker-node-12", url, (), ca_file)
        write = river[river.index('loki.write "default"'):]
        write = write[:write.index("\n}\n")]
        assert f'url = "{url}/loki/api/v1/push"' in write
        assert (f'ca_file = "{CA_FILE}"' in write) is tls and ("tls_config" in write) is tls
