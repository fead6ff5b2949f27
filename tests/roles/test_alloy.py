"""Alloy's rendered config: the promtail pipeline in Alloy's syntax, and its service flags."""

import re
import runpy
from pathlib import Path

import pytest
import yaml

from homelab.config import ConfigError, model_from_data
from roles import alloy, promtail
from tests.roles.packaged import needs_package, packaged_check

REPO = Path(__file__).resolve().parents[2]
LOKI = "http://10.0.0.11:3100"


def settings(**data) -> alloy.Settings:
    return model_from_data("inventory data for worker-node-12", alloy.Settings,
                           {"install": {"version": "1.10.0"}, **data})


def block(config: str, header: str) -> str:
    """The body of a top-level block such as `loki.process "toy_redis"` (blocks end at a column-0 brace)."""
    start = config.index(header + " {")
    return config[start:config.index("\n}", start)]


def test_same_pipeline_as_promtail():
    config = alloy.render_config(settings(), "worker-node-12", LOKI)
    promtail_conf = yaml.safe_load(promtail.render_config(
        model_from_data("group data", promtail.Settings, {"install": {"version": "3.5.0"}}), "worker-node-12", LOKI))
    stream_labels = promtail_conf["scrape_configs"][0]["static_configs"][0]["labels"]
    targets = dict(re.findall(r'"([\w_]+)"\s*=\s*"([^"]*)"', block(config, 'local.file_match "toy_redis"')))
    assert targets == stream_labels
    process = block(config, 'loki.process "toy_redis"')
    labels = re.search(r"stage\.labels \{\s*values = \{([^}]*)\}", process).group(1)
    assert set(re.findall(r"(\w+)\s*=", labels)) == {"level", "event"}
    assert 'source = "ts"' in process and 'format = "RFC3339"' in process
    assert f'url = "{LOKI}/loki/api/v1/push"' in block(config, 'loki.write "default"')
    assert "forward_to = [loki.process.toy_redis.receiver]" in block(config, 'loki.source.file "toy_redis"')


def test_flags_name_the_config_and_the_listen_port():
    flags = dict(line.split("=", 1) for line in alloy.render_defaults(settings(listen_port=12999)).splitlines()
                 if line and not line.startswith("#"))
    assert flags["CONFIG_FILE"] == '"/etc/alloy/config.alloy"'
    assert "--server.http.listen-addr=0.0.0.0:12999" in flags["CUSTOM_ARGS"]
    # The package's unit adds --storage.path itself; positions live there, under /var/lib.
    assert "--storage.path" not in flags["CUSTOM_ARGS"] and alloy.STORAGE_PATH.startswith("/var/lib/")


def test_group_data_is_valid_and_pinned():
    data = runpy.run_path(str(REPO / "inventory/group_data/log_shipper.py"))["alloy"]
    assert model_from_data("inventory/group_data/log_shipper.py", alloy.Settings, data).install.version


@needs_package(alloy.PACKAGE)
def test_the_packaged_checker_accepts_the_rendered_config(tmp_path):
    result = packaged_check(alloy.PACKAGE, alloy.render_config(settings(), "worker-node-12", LOKI), tmp_path)
    assert result.returncode == 0, result.stderr


PYROSCOPE = "http://pyroscope.example:4040"


def profiled_cluster(pyroscope_url: str | None = PYROSCOPE):
    """Alloy and a toy-redis with profiling on (pki.tls on) on one host, a relay with profiling off on another."""
    from tests.test_topology import topology

    shipper = {"install": {"version": "1.10.0"}, **({"pyroscope_url": pyroscope_url} if pyroscope_url else {})}
    return topology({"ship": {"ssh_hostname": "192.0.2.12", "log_shipper": "alloy", "alloy": shipper,
                              "toy_redis": {"profiling_hz": 19}, "pki": {"tls": True}},
                     "mon": {"ssh_hostname": "192.0.2.14"}},
                    log_shipper=["ship"], toy_redis=["ship"], alert_relay=["mon"])


def test_with_a_pyroscope_url_the_profiled_services_are_scraped_and_pushed_there():
    from pprof_sampler import PATH, WINDOW_S

    from homelab.access import callers
    from roles.pki import CA_FILE

    cluster = profiled_cluster()
    targets = alloy.profile_targets(cluster, "ship")
    assert [target.host for target in targets] == ["ship"]  # the relay's profiling is off
    shipper = cluster.settings("ship", "alloy")
    config = alloy.render_config(shipper, "ship", LOKI, targets)
    scrape = block(config, 'pyroscope.scrape "toy_redis_ship"')
    labels = dict(re.findall(r'"(\w+)"\s*=\s*"([^"]*)"', scrape))
    assert labels == {"__address__": cluster.endpoint("toy_redis", "ship", "metrics").netloc,
                      "service_name": "toy-redis", "host": "ship"}
    assert 'scheme          = "https"' in scrape
    assert re.search(r'basic_auth \{\s*username\s*= "alloy"\s*password_file = "%s"' % alloy.WEB_PASSWORD_FILE, scrape)
    assert re.search(r'tls_config \{\s*ca_file = "%s"' % CA_FILE, scrape)
    # Only the CPU profile is served; Alloy's other default profile types would each fail every scrape.
    assert re.search(r'profile\.process_cpu \{\s*enabled = true\s*path\s*= "%s"\s*delta\s*= true' % PATH, scrape)
    for kind in ("memory", "block", "goroutine", "mutex"):
        assert re.search(r"profile\.%s \{\s*enabled = false\s*\}" % kind, scrape), kind
    # Alloy asks for the last (interval - 1) s: no more than the services' samplers keep.
    interval = int(re.search(r'scrape_interval = "(\d+)s"', scrape).group(1))
    assert 1 <= interval - 1 <= WINDOW_S
    assert "forward_to = [pyroscope.write.default.receiver]" in scrape
    assert f'url = "{PYROSCOPE}"' in block(config, 'pyroscope.write "default"')
    # The scrape is a flow like any other: the service's logins admit alloy, its firewall lets it in.
    assert "alloy" in callers(cluster, "toy_redis")
    metrics = next(inbound for inbound in cluster.inbound("ship")
                   if (inbound.role, inbound.listener) == ("toy_redis", "metrics"))
    assert "ship" in metrics.callers


def test_without_a_pyroscope_url_nothing_is_scraped():
    from homelab.access import callers

    cluster = profiled_cluster(pyroscope_url=None)
    assert alloy.profile_targets(cluster, "ship") == []
    assert "pyroscope" not in alloy.render_config(cluster.settings("ship", "alloy"), "ship", LOKI)
    assert "alloy" not in callers(cluster, "toy_redis")


def test_a_scrape_interval_past_the_samplers_window_is_refused():
    from pprof_sampler import WINDOW_S

    with pytest.raises(ConfigError, match=r"^inventory data for worker-node-12: profile_scrape_interval_s: "):
        settings(pyroscope_url=PYROSCOPE, profile_scrape_interval_s=WINDOW_S + 2)
