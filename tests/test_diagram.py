"""docs/architecture.md is generated from the inventory and must not go stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from homelab.diagram import INVENTORY, OUTPUT, main, render

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
    assert 'subgraph worker_node_15["worker-node-15"]' in diagram
    assert 'worker_node_15__toy_redis["toy-redis<br/>RESP :6379, metrics :8080"]' in diagram
    assert 'worker_node_14__prometheus -->|"scrape :8080"| worker_node_15__toy_redis' in diagram
    # Every host gets node_exporter, and Prometheus scrapes it.
    assert 'worker_node_14__prometheus -->|"scrape :9100"| worker_node_15__node_exporter' in diagram
    assert "| worker-node-15 | toy-redis | `toy_redis` | 6379 (RESP), 8080 (metrics) |" in diagram


def test_a_port_changed_in_group_data_changes_the_diagram(tmp_path):
    inventory = copy_inventory(tmp_path)
    all_data = tmp_path / "group_data" / "all.py"
    all_data.write_text(all_data.read_text().replace('"listen_port": 9100', '"listen_port": 19100'))
    diagram = render(inventory)
    assert 'worker_node_14__prometheus -->|"scrape :19100"| master_node__node_exporter' in diagram
    assert ":9100" not in diagram


def test_the_log_shipper_drawn_is_the_one_group_data_chooses(tmp_path):
    inventory = copy_inventory(tmp_path)
    (tmp_path / "group_data" / "log_shipper.py").write_text('log_shipper = "alloy"\n')
    diagram = render(inventory)
    assert 'worker_node_12__log_shipper["Alloy<br/>HTTP :12345"]' in diagram
    assert "Promtail" not in diagram


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
