"""Loki's rendered config: single binary on the filesystem, retention the compactor enforces, limits."""

import runpy
from pathlib import Path

import pytest
import yaml

from homelab.config import ConfigError, model_from_data
from roles import loki
from tests.roles.packaged import needs_package, packaged_check

REPO = Path(__file__).resolve().parents[2]
PINNED = {"install": {"version": "3.5.0"}}


def settings(**data) -> loki.Settings:
    return model_from_data("inventory data for worker-node-11", loki.Settings, {**PINNED, **data})


def config(**data) -> dict:
    return yaml.safe_load(loki.render_config(settings(**data)))


def test_single_binary_on_local_filesystem_storage():
    conf = config()
    assert conf["auth_enabled"] is False
    assert conf["server"]["http_listen_port"] == 3100
    assert conf["common"]["replication_factor"] == 1
    assert conf["common"]["ring"]["kvstore"]["store"] == "inmemory"
    storage = conf["common"]["storage"]["filesystem"]
    assert all(path.startswith(loki.DATA_DIR + "/") for path in storage.values())
    [schema] = conf["schema_config"]["configs"]
    assert (schema["store"], schema["object_store"], schema["schema"]) == ("tsdb", "filesystem", "v13")
    assert schema["index"]["period"] == "24h"


def test_retention_is_enforced_by_the_compactor_and_bounds_queries():
    conf = config(retention="14d")
    assert conf["limits_config"]["retention_period"] == "14d"
    assert conf["limits_config"]["max_query_lookback"] == "14d"
    assert conf["compactor"]["retention_enabled"] is True
    assert conf["compactor"]["delete_request_store"] == "filesystem"
    assert conf["compactor"]["working_directory"].startswith(loki.DATA_DIR + "/")


def test_limits_come_from_group_data():
    limits = config(ingestion_rate_mb=2, max_streams=100, max_label_names_per_series=8)["limits_config"]
    assert (limits["ingestion_rate_mb"], limits["max_global_streams_per_user"], limits["max_label_names_per_series"]) \
        == (2, 100, 8)
    assert limits["reject_old_samples"] is True


@pytest.mark.parametrize("retention", ["36h", "2w", "0d", "thirty days"])
def test_retention_not_in_whole_days_is_a_one_line_error(retention):
    with pytest.raises(ConfigError) as exc:
        settings(retention=retention)
    assert str(exc.value) == (
        "inventory data for worker-node-11: retention: expected whole days like '31d' "
        f"(Loki deletes by 24h index period) (got {retention!r})"
    )


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match=r"^inventory data for worker-node-11: retension: unknown key$"):
        settings(retension="31d")


def test_group_data_is_valid_and_pinned():
    data = runpy.run_path(str(REPO / "inventory/group_data/loki.py"))["loki"]
    parsed = model_from_data("inventory/group_data/loki.py", loki.Settings, data)
    assert parsed.install.version


@needs_package(loki.PACKAGE)
def test_the_packaged_checker_accepts_the_rendered_config(tmp_path):
    result = packaged_check(loki.PACKAGE, loki.render_config(settings()), tmp_path)
    assert result.returncode == 0, result.stderr
