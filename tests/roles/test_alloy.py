"""Alloy's rendered config: the promtail pipeline in Alloy's syntax, and its service flags."""

import re
import runpy
from pathlib import Path

import yaml

from homelab.config import model_from_data
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
