"""roles/pki with pki.tls on: exporter-toolkit web configs, and Prometheus and blackbox reaching
secured listeners over https with the cluster CA and their own logins (rendered, not deployed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import bcrypt
import pytest
import yaml

from homelab.access import callers, password_secret
from homelab.config import ConfigError
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.vault import load_vault
from roles import blackbox
from roles.pki import CA_FILE, CERT_FILE, KEY_FILE, Settings, expiry_metrics
from roles.pki.web import bcrypt_hash, check_web_config, render_web_config
from roles.prometheus import WEB_PASSWORD_FILE, render_config
from roles.prometheus import Settings as PrometheusSettings

REPO = Path(__file__).resolve().parents[2]
VAULT = load_vault(REPO / "secrets/lab.vault.yml", REPO / "secrets/lab.vault-password")


@pytest.fixture(scope="module")
def tls_topology(tmp_path_factory) -> Topology:
    """The lab's inventory with `pki = {"tls": True}` added to group_data/all.py."""
    folder = tmp_path_factory.mktemp("inventory")
    shutil.copytree(REPO / "inventory", folder, dirs_exist_ok=True)
    with open(folder / "group_data" / "all.py", "a") as all_data:
        all_data.write('\npki = {"tls": True}\n')
    return Topology.load(folder / "lab.py")


def test_the_web_config_passes_promtool_and_admits_each_caller_with_its_vault_password(tls_topology):
    users = {user: bcrypt_hash(user, VAULT[password_secret(user)]) for user in callers(tls_topology, "prometheus")}
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
    assert render_web_config({user: bcrypt_hash(user, VAULT[password_secret(user)]) for user in users}) == text


def test_a_broken_web_config_is_refused_before_it_is_sent():
    with pytest.raises(ConfigError) as error:
        check_web_config(render_web_config({"operator": "not a bcrypt hash"}).replace("TLS12", "TLS99"))
    assert "promtool check web-config failed" in str(error.value)


def test_prometheus_scrapes_secured_listeners_over_https_with_its_own_login(tls_topology):
    config = yaml.safe_load(render_config(PrometheusSettings(), tls_topology))
    client = {"scheme": "https", "tls_config": {"ca_file": CA_FILE},
              "basic_auth": {"username": "prometheus", "password_file": WEB_PASSWORD_FILE}}
    for job in tls_topology.scrape_jobs():
        [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == job.name]
        secured = ROLE_BY_NAME[job.role].listener(ROLE_BY_NAME[job.role].scrape[job.name]).secured
        assert {key: scrape.get(key) for key in client} == (client if secured else dict.fromkeys(client)), job.name
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
        if url.startswith("https://"):
            assert module["http"]["tls_config"] == {"ca_file": CA_FILE}
            assert module["http"]["basic_auth"] == {"username": blackbox.WEB_USER,
                                                    "password_file": blackbox.WEB_PASSWORD_FILE}
        else:
            assert target["labels"]["module"] == health and "basic_auth" not in module.get("http", {})
    assert any(t["targets"][0].startswith("https://") for t in probes["static_configs"])


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
