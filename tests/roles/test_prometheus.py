"""Prometheus's scrape config generated from the inventory, checked by the real promtool and run."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from pyinfra.api.inventory import Inventory
from pyinfra.context import ctx_host

import roles.alert_relay
import roles.alertmanager
import roles.alloy
import roles.blackbox
import roles.loki
import roles.nginx
import roles.node_exporter
import roles.promtail
import roles.toy_redis
from homelab.config import ConfigError
from homelab.topology import Topology, load_inventory
from homelab.alerts.render import THRESHOLDS_FILE, load_thresholds
from homelab.types import duration_text, port_of, seconds
from roles.common import role_settings
from roles.promtail import DEFAULT_LOG_SHIPPER
from roles.prometheus import (
    CONFIG_CHECK,
    RULES_CHECK,
    Settings,
    check_samples_stay_fresh,
    render_config,
    SNAPSHOTS_DIR,
    STORAGE_PATH,
    render_defaults,
    rule_files,
)

REPO = Path(__file__).resolve().parents[2]

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="needs Debian's prometheus (promtool)")
needs_prometheus = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus")


def topology_of(hosts: dict[str, dict], **groups: list[str]) -> Topology:
    """The topology of ``hosts`` (name -> data) in ``groups`` (group -> host names)."""
    names = [(name, data) for name, data in hosts.items()]
    return Topology(Inventory((names, {}), **{group: (members, {}) for group, members in groups.items()}))


def scrape_jobs(config_text: str) -> dict[str, dict[str, str]]:
    """job -> {instance label: address scraped}, every static target of the rendered config."""
    config = yaml.safe_load(config_text)
    jobs: dict[str, dict[str, str]] = {}
    for job in config["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], {})
        for static in job["static_configs"]:
            for address in static["targets"]:
                assert static["labels"]["instance"] not in targets, f"{job['job_name']} lists it twice"
                targets[static["labels"]["instance"]] = address
    return jobs


def flag_args(defaults_file: str) -> list[str]:
    """The arguments an /etc/default file's ARGS line passes, split as systemd's $ARGS does."""
    [line] = [line for line in defaults_file.splitlines() if line.startswith("ARGS=")]
    return shlex.split(line.removeprefix("ARGS="))[0].split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LAB = load_inventory(REPO / "inventory" / "lab.py")
LAB_TOPOLOGY = Topology(LAB)
LAB_ADDRESS = {host.name: host.data.ssh_hostname for host in LAB}
# Each role's default ports, from the Settings that own them.
NODE = roles.node_exporter.Settings().listen_port
NGINX = roles.nginx.Settings()
TOY_REDIS_METRICS = roles.toy_redis.Settings().metrics_port
ALERTMANAGER = roles.alertmanager.Settings().listen_port
RELAY = port_of(roles.alert_relay.Settings().listen)
PROMETHEUS = Settings().listen_port
LOKI = roles.loki.Settings.model_fields["listen_port"].default
PROMTAIL = roles.promtail.Settings.model_fields["listen_port"].default
ALLOY = roles.alloy.Settings.model_fields["listen_port"].default
BLACKBOX = roles.blackbox.Settings().listen_port


def test_lab_config_scrapes_every_component_where_the_inventory_puts_it():
    jobs = scrape_jobs(render_config(Settings(), LAB_TOPOLOGY))

    def only(host: str, port: int) -> dict[str, str]:
        return {f"{host}:{port}": f"{LAB_ADDRESS[host]}:{port}"}

    assert jobs["node"] == {f"{name}:{NODE}": f"{address}:{NODE}" for name, address in LAB_ADDRESS.items()}
    assert jobs["toy-redis"] == only("worker-node-12", TOY_REDIS_METRICS)
    assert jobs["nginx"] == only("master-node", NGINX.exporter_port)
    assert jobs["mtail"] == only("master-node", NGINX.mtail_port)
    assert jobs["alertmanager"] == only("worker-node-14", ALERTMANAGER)
    assert jobs["alert-relay"] == only("worker-node-14", RELAY)
    assert jobs["prometheus"] == only("worker-node-14", PROMETHEUS)
    assert jobs["blackbox"][f"http://master-node:{NGINX.listen_port}/healthz"] == (
        f"http://{LAB_ADDRESS['master-node']}:{NGINX.listen_port}/healthz")


def test_grafana_labs_components_are_scraped_where_they_run():
    # Lab nodes skip Grafana's packages unless they come from offline .debs: nothing to scrape there.
    lab = {"logs": {"vendor_packages_optional": True}, "ship": {"vendor_packages_optional": True}}
    topology = topology_of(lab, loki=["logs"], log_shipper=["ship"], blackbox=["logs"])
    jobs = scrape_jobs(render_config(Settings(), topology))
    assert "loki" not in jobs and DEFAULT_LOG_SHIPPER not in jobs and "blackbox" not in jobs
    lab["logs"]["loki"] = {"install": {"source": "offline", "version": "3.5.0"}}
    jobs = scrape_jobs(render_config(Settings(), topology_of(lab, loki=["logs"], blackbox=["logs"])))
    assert jobs["loki"] == {f"logs:{LOKI}": f"logs:{LOKI}"}
    assert list(jobs["blackbox"]) == [f"http://logs:{LOKI}/ready"]
    # The real cluster installs them from Grafana's repository: always scraped.
    pinned = {"install": {"version": "3.5.0"}}
    cluster = {"logs": {"loki": pinned}, "ship": {"promtail": pinned, "alloy": pinned}}
    jobs = scrape_jobs(render_config(Settings(), topology_of(cluster, loki=["logs"], log_shipper=["ship"])))
    assert jobs["loki"] == {f"logs:{LOKI}": f"logs:{LOKI}"}
    shipper_port = {"promtail": PROMTAIL, "alloy": ALLOY}[DEFAULT_LOG_SHIPPER]
    assert jobs[DEFAULT_LOG_SHIPPER] == {f"ship:{shipper_port}": f"ship:{shipper_port}"}


def test_the_log_shipper_job_follows_the_hosts_choice():
    pinned = {"install": {"version": "3.5.0"}}
    hosts = {"a": {"log_shipper": "alloy", "alloy": pinned},
             "b": {"log_shipper": "promtail", "promtail": {**pinned, "listen_port": 9081}}}
    jobs = scrape_jobs(render_config(Settings(), topology_of(hosts, log_shipper=["a", "b"])))
    assert jobs["alloy"] == {f"a:{ALLOY}": f"a:{ALLOY}"}
    assert jobs["promtail"] == {"b:9081": "b:9081"}


def test_probes_go_through_the_blackbox_host_with_their_module():
    config = yaml.safe_load(render_config(Settings(), LAB_TOPOLOGY))
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "blackbox"]
    assert job["metrics_path"] == "/probe"
    assert {static["labels"]["module"] for static in job["static_configs"]} == {"http_2xx"}
    relabel = {rule["target_label"]: rule for rule in job["relabel_configs"]}
    assert relabel["__param_target"]["source_labels"] == ["__address__"]
    assert relabel["__param_module"]["source_labels"] == ["module"]
    assert relabel["__address__"]["replacement"] == f"{LAB_ADDRESS['worker-node-14']}:{BLACKBOX}"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"{LAB_ADDRESS['worker-node-14']}:{ALERTMANAGER}"
    ]
    # Every health path of the lab's services (Loki is skipped there: no Grafana repository).
    probed = {static["labels"]["instance"] for static in job["static_configs"]}
    assert probed == {f"http://master-node:{NGINX.listen_port}/healthz", f"http://worker-node-14:{RELAY}/healthz",
                      f"http://worker-node-14:{ALERTMANAGER}/-/healthy", f"http://worker-node-14:{PROMETHEUS}/-/healthy"}


def test_a_host_added_to_a_group_gains_its_targets_and_none_is_listed_twice():
    hosts = {"web-1": {"ssh_hostname": "192.0.2.1"}, "web-2": {}, "mon": {"ssh_hostname": "192.0.2.9"}}
    # mon is in two groups and listed twice in one: each of its targets still appears once.
    topology = topology_of(hosts, nginx=["web-1"], prometheus=["mon", "mon"], alertmanager=["mon"],
                           blackbox=["mon"])
    before = scrape_jobs(render_config(Settings(), topology))
    topology = topology_of(hosts, nginx=["web-1", "web-2"], prometheus=["mon", "mon"], alertmanager=["mon"],
                           blackbox=["mon"])
    after = scrape_jobs(render_config(Settings(), topology))
    assert set(after["nginx"]) - set(before["nginx"]) == {f"web-2:{NGINX.exporter_port}"}
    assert set(after["mtail"]) - set(before["mtail"]) == {f"web-2:{NGINX.mtail_port}"}
    # Without an ssh_hostname, a host is reached by its inventory name.
    assert after["node"][f"web-2:{NODE}"] == f"web-2:{NODE}"
    assert after["node"][f"mon:{NODE}"] == f"192.0.2.9:{NODE}"
    assert list(after["prometheus"]) == [f"mon:{PROMETHEUS}"]
    assert "toy-redis" not in after  # no toy_redis group, no job


def test_ports_follow_the_serving_roles_group_data():
    hosts = {"web-1": {"nginx": {"exporter_port": 9999}, "node_exporter": {"listen_port": 9200}},
             "relay": {"alert_relay": {"listen": "0.0.0.0:9500"}}}
    jobs = scrape_jobs(render_config(Settings(), topology_of(hosts, nginx=["web-1"], alert_relay=["relay"])))
    assert jobs["nginx"] == {"web-1:9999": "web-1:9999"}
    assert jobs["node"]["web-1:9200"] == "web-1:9200"
    assert jobs["alert-relay"] == {"relay:9500": "relay:9500"}


def test_a_log_shipper_nobody_knows_is_a_one_line_error():
    with pytest.raises(ConfigError) as error:
        render_config(Settings(), topology_of({"ship": {"log_shipper": "fluentd"}}, log_shipper=["ship"]))
    assert str(error.value) == "inventory data for ship: log_shipper: expected one of 'promtail', 'alloy', got 'fluentd'"


def settings_error(data: dict) -> str:
    with ctx_host.use(LAB.get_host("worker-node-14")):
        with pytest.raises(ConfigError) as error:
            role_settings("prometheus", Settings, data)
    return str(error.value)


def test_bad_settings_give_one_line_errors_naming_the_key():
    assert settings_error({"scrape_interval": "often"}) == (
        "inventory data for worker-node-14: prometheus.scrape_interval: "
        "expected a duration like 30s, 5m, 1h30m or 15d (units largest first, each once) (got 'often')"
    )
    assert settings_error({"scrape_interval": "5s"}) == (
        "inventory data for worker-node-14: prometheus.scrape_timeout: "
        "expected at most scrape_interval (5s), got '10s'"
    )
    assert settings_error({"retention": "30d"}) == "inventory data for worker-node-14: prometheus.retention: unknown key"
    assert "prometheus.retention_size" in settings_error({"retention_size": "lots"})


def test_a_scrape_slower_than_the_tls_alerts_freshness_window_is_refused():
    """ScrapeTLSOrLoginFailing ignores samples older than its fresh_within: a live target's latest
    sample (a scrape interval plus its timeout old at worst) must stay younger."""
    fresh_within = seconds(load_thresholds(THRESHOLDS_FILE).alerts.ScrapeTLSOrLoginFailing.fresh_within)
    check_samples_stay_fresh(Settings())
    slow = Settings(scrape_interval=duration_text(fresh_within - 10), scrape_timeout="10s")
    with pytest.raises(ConfigError) as error:
        check_samples_stay_fresh(slow)
    assert str(error.value).startswith("inventory: prometheus.scrape_interval: expected scrape_interval + "
                                       "scrape_timeout below ScrapeTLSOrLoginFailing's fresh_within")
    check_samples_stay_fresh(Settings(scrape_interval=duration_text(fresh_within - 11), scrape_timeout="10s"))


def test_group_data_settings_reach_the_config_and_the_flags():
    with ctx_host.use(LAB.get_host("worker-node-14")):
        settings = role_settings("prometheus", Settings)
    config = yaml.safe_load(render_config(settings, LAB_TOPOLOGY))
    assert config["global"]["scrape_interval"] == settings.scrape_interval
    assert config["global"]["evaluation_interval"] == settings.evaluation_interval
    assert f"--storage.tsdb.retention.time={settings.retention_time}" in flag_args(render_defaults(settings))
    assert "--storage.tsdb.retention.size=20GB" in flag_args(render_defaults(Settings(retention_size="20GB")))
    assert "--web.enable-admin-api" in flag_args(render_defaults(settings))
    assert "--web.enable-admin-api" not in flag_args(render_defaults(Settings(admin_api=False)))


def run_check(command: str, staged: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command.format(staged=shlex.quote(str(staged)))],
                          capture_output=True, text=True, timeout=60)


GOOD_RULES = """groups:
  - name: example
    rules:
      - alert: AlwaysQuiet
        expr: vector(0) > 1
        labels: {severity: warning}
"""


@needs_promtool
def test_rendered_config_passes_promtool_with_the_generated_rules(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    generated = rule_files()
    for name, content in generated.items():
        (rules_dir / name).write_text(content)
    (rules_dir / "example.rules.yml").write_text(GOOD_RULES)
    staged = tmp_path / "prometheus.yml.staged"
    staged.write_text(render_config(Settings(), LAB_TOPOLOGY, rules_dir=str(rules_dir)))
    result = run_check(CONFIG_CHECK, staged)
    assert result.returncode == 0, result.stdout + result.stderr
    # The glob reached the rule files: promtool loaded and checked each of them.
    assert f"SUCCESS: {len(generated) + 1} rule files found" in result.stdout
    assert f"Checking {rules_dir / 'example.rules.yml'}" in result.stdout


@needs_promtool
def test_checks_refuse_a_broken_rule_file_and_a_broken_config(tmp_path):
    rules = tmp_path / "example.rules.yml.staged"
    rules.write_text(GOOD_RULES)
    assert run_check(RULES_CHECK, rules).returncode == 0
    rules.write_text(GOOD_RULES.replace("vector(0) > 1", "vector(0) >"))
    result = run_check(RULES_CHECK, rules)
    assert result.returncode != 0 and "parse error" in result.stdout + result.stderr

    config = tmp_path / "prometheus.yml.staged"
    config.write_text(render_config(Settings(), LAB_TOPOLOGY, rules_dir=str(tmp_path)).replace("scrape_interval", "scrape_intervall", 1))
    result = run_check(CONFIG_CHECK, config)
    assert result.returncode != 0 and "scrape_intervall" in result.stdout + result.stderr


@needs_prometheus
def test_prometheus_runs_with_the_rendered_flags_and_config(tmp_path):
    """Prometheus itself loads what we render: retention from settings, one target per inventory entry."""
    # Only loopback addresses: the test must not send traffic to the lab's or anyone's network.
    hosts = {"web-1": {"ssh_hostname": "127.0.0.1"}, "mon": {"ssh_hostname": "127.0.0.2"}}
    topology = topology_of(hosts, nginx=["web-1"], prometheus=["mon"])
    settings = Settings(retention_time="3d", scrape_interval="1h", scrape_timeout="10s")
    config = tmp_path / "prometheus.yml"
    config.write_text(render_config(settings, topology, rules_dir=str(tmp_path)))
    port = free_port()
    args = [arg for arg in flag_args(render_defaults(settings)) if not arg.startswith(("--config.file", "--storage.tsdb.path", "--web.listen"))]
    process = subprocess.Popen(
        ["prometheus", *args, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready in 30s"
            assert process.poll() is None, "prometheus exited"
            time.sleep(0.2)
        info = requests.get(f"http://127.0.0.1:{port}/api/v1/status/runtimeinfo", timeout=5).json()["data"]
        assert info["storageRetention"] == "3d"
        # Discovered targets show up a few seconds after ready, job by job (CI once saw 3 of 5).
        expected_count = 5  # node x2, nginx, mtail, prometheus
        while len((targets := requests.get(f"http://127.0.0.1:{port}/api/v1/targets",
                                           timeout=5).json()["data"])["activeTargets"]) < expected_count:
            assert time.monotonic() < deadline, f"prometheus listed {targets['activeTargets']} in 30s"
            time.sleep(0.5)
        seen = {(t["labels"]["job"], t["labels"]["instance"], t["scrapeUrl"]) for t in targets["activeTargets"]}
        exporter = NGINX.exporter_port
        assert ("nginx", f"web-1:{exporter}", f"http://127.0.0.1:{exporter}/metrics") in seen
        assert ("node", f"mon:{NODE}", f"http://127.0.0.2:{NODE}/metrics") in seen
        assert len(seen) == len(targets["activeTargets"]) == expected_count
        # The admin API homelab backup uses: a snapshot appears where the backup copies it from.
        snapshot = requests.post(f"http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot", timeout=30)
        assert snapshot.ok, snapshot.text
        assert (tmp_path / "data" / Path(SNAPSHOTS_DIR).relative_to(STORAGE_PATH) / snapshot.json()["data"]["name"]).is_dir()
    finally:
        process.terminate()
        process.wait(timeout=30)
