"""Promtail's rendered config: tails toy-redis's log, JSON stages, low-cardinality labels, positions kept."""

import json
import logging
import runpy
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from homelab.config import model_from_data
from roles import promtail
from tests.roles.packaged import needs_package, packaged_check

REPO = Path(__file__).resolve().parents[2]
LOKI = "http://10.0.0.11:3100"


def settings(**data) -> promtail.Settings:
    return model_from_data("inventory data for worker-node-12", promtail.Settings,
                           {"install": {"version": "3.5.0"}, **data})


def config(**data) -> dict:
    return yaml.safe_load(promtail.render_config(settings(**data), "worker-node-12", LOKI))


def stages(conf: dict) -> dict:
    return {name: body for stage in conf["scrape_configs"][0]["pipeline_stages"] for name, body in stage.items()}


def test_pushes_to_loki_and_keeps_positions_under_var_lib():
    conf = config()
    assert conf["clients"] == [{"url": f"{LOKI}/loki/api/v1/push"}]
    assert conf["positions"]["filename"] == "/var/lib/promtail/positions.yaml"
    assert conf["server"]["http_listen_port"] == 9080


def test_tails_the_toy_redis_log_with_fixed_stream_labels():
    [job] = config()["scrape_configs"]
    [static] = job["static_configs"]
    assert static["labels"] == {"job": "toy-redis", "host": "worker-node-12", "__path__": "/var/log/toy-redis/toy-redis.log"}
    assert config(toy_redis_log="/srv/toy-redis.log")["scrape_configs"][0]["static_configs"][0]["labels"]["__path__"] \
        == "/srv/toy-redis.log"


def test_only_level_and_event_become_labels():
    pipeline = stages(config())
    assert set(pipeline["json"]["expressions"].values()) == {"ts", "level", "event"}
    assert set(pipeline["labels"]) == {"level", "event"}
    assert pipeline["timestamp"] == {"source": "ts", "format": "RFC3339"}


def test_pipeline_reads_the_fields_toy_redis_writes():
    logs = pytest.importorskip("toy_redis.logs", reason="toy-redis's log module is not written yet")
    record = logging.LogRecord("toy_redis", logging.WARNING, __file__, 1, "client_rejected", None, None)
    record.fields = {"peer": "127.0.0.1:5555", "reason": "maxclients"}
    line = json.loads(logs.JsonLinesFormatter().format(record))
    pipeline = stages(config())
    for field in pipeline["json"]["expressions"].values():
        assert field in line
    assert (line["level"], line["event"]) == ("warning", "client_rejected")
    # Go's RFC3339 layout accepts the fractional seconds toy-redis writes; so does fromisoformat.
    assert datetime.fromisoformat(line["ts"]).tzinfo is not None


def test_group_data_picks_a_known_shipper_and_is_valid():
    data = runpy.run_path(str(REPO / "inventory/group_data/log_shipper.py"))
    assert data["log_shipper"] in promtail.LOG_SHIPPERS
    assert model_from_data("inventory/group_data/log_shipper.py", promtail.Settings, data["promtail"]).install.version


@needs_package(promtail.PACKAGE)
def test_the_packaged_checker_accepts_the_rendered_config(tmp_path):
    result = packaged_check(promtail.PACKAGE, promtail.render_config(settings(), "worker-node-12", LOKI), tmp_path)
    assert result.returncode == 0, result.stderr
