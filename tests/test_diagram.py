"""docs/architecture.md is generated from the inventory and must not go stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from homelab.config import ConfigError
from homelab.diagram import INVENTORY, OUTPUT, main, render
from roles.alloy import Settings as AlloySettings
from roles.node_exporter import Settings as NodeExporterSettings
from roles.toy_redis import Settings as ToyRedisSettings

REPO = Path(__file__).resolve().parents[1]
DIAGRAM_CLI = Path(sys.executable).with_name("homelab-diagram")


def test_committed_diagram_is_current():
    assert OUTPUT.read_text() == render(INVENTORY), (
        "docs/architecture.md is stale: run `.venv/bin/homelab-diagram` and commit docs/architecture.md")


def copy_inventory(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "inventory" / "group_data", tmp_path / "group_data")
    inventory = tmp_path / "homelab.py"
    shutil.copy(INVENTORY, inventory)
    return inventory


def test_a_host_added_to_a_group_appears_with_its_roles_and_flows(tmp_path):
    inventory = copy_inventory(tmp_path)
    inventory.write_text(inventory.read_text() + '\ntoy_redis.append(("worker-node-15", {"ssh_hostname": "192.168.1.15"}))\n')
    diagram = render(inventory)
    toy_redis, node = ToyRedisSettings(), NodeExporterSettings()
    assert 'subgraph worker_node_15["worker-node-15"]' in diagram
    assert f'worker_node_15__toy_redis["toy-redis<br/>resp :{toy_redis.port}, metrics :{toy_redis.metrics_port}"]' in diagram
    assert f'worker_node_14__prometheus -->|"scrape :{toy_redis.metrics_port}"| worker_node_15__toy_redis' in diagram
    # Every host gets node_exporter, and Prometheus scrapes it.
    assert f'worker_node_14__prometheus -->|"scrape :{node.listen_port}"| worker_node_15__node_exporter' in diagram
    assert (f"| worker-node-15 | toy-redis | `toy_redis` | {toy_redis.port} (resp), {toy_redis.metrics_port} (metrics) |"
            in diagram)


def test_a_port_changed_in_group_data_changes_the_diagram(tmp_path):
    inventory = copy_inventory(tmp_path)
    all_data = tmp_path / "group_data" / "all.py"
    all_data.write_text(all_data.read_text() + '\nnode_exporter = {"listen_port": 19100}\n')
    diagram = render(inventory)
    assert 'worker_node_14__prometheus -->|"scrape :19100"| master_node__node_exporter' in diagram
    assert f":{NodeExporterSettings().listen_port}" not in diagram


def test_the_log_shipper_drawn_is_the_one_group_data_chooses(tmp_path):
    inventory = copy_inventory(tmp_path)
    shipper_data = tmp_path / "group_data" / "log_shipper.py"
    shipper_data.write_text(shipper_data.read_text() + '\nlog_shipper = "alloy"\n')
    diagram = render(inventory)
    alloy_port = AlloySettings.model_fields["listen_port"].default
    assert f'worker_node_12__alloy["Alloy<br/>http :{alloy_port}"]' in diagram
    assert 'worker_node_12__alloy -->|"push logs :' in diagram
    assert "Promtail" not in diagram
    shipper_data.write_text(shipper_data.read_text() + '\nlog_shipper = "fluentd"\n')
    with pytest.raises(ConfigError, match="^inventory data for worker-node-12: log_shipper: expected one of"):
        render(inventory)


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path, capsys):
    out = tmp_path / "architecture.md"
    out.write_text(render(INVENTORY).replace("worker-node-12", "worker-node-13"))
    assert main(["--check", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"{out}: stale diagram: run `.venv/bin/homelab-diagram` and commit it\n"
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0


def test_console_script_checks_the_committed_diagram():
    result = subprocess.run([str(DIAGRAM_CLI), "--check"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
