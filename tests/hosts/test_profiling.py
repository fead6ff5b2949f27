"""`homelab profile` against toy-redis on its lab node, with a planted hot spot and leak: the hot
function tops the CPU profile and the leaking line tops the memory growth, through the command an
operator runs (SSH and py-spy from the node's venv; the RESP port with the vault's password).

The planted commands (tests/profiling/planted/sitecustomize.py, with the costs of
tests/planted/planted_costs.py it imports) are put on the node for this module only, in /run and a runtime drop-in of the unit, and removed after it (the service restarted on
its deployed files)."""

from __future__ import annotations

import pytest

from homelab import profiling
from homelab.cli import main
from roles.toy_redis import APP
from tests.conftest import LAB_INVENTORY, hosts_in
from tests.planted import COSTS, LEAK_LINE
from tests.profiling.conftest import PLANTED, Load
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

NODE = hosts_in("toy_redis")[0]
PLANTED_DIR = "/run/homelab-test-planted"
DROP_IN = f"/run/systemd/system/{APP.service}.service.d/planted.conf"


def _restart(host) -> None:
    host.run_expect([0], f"systemctl daemon-reload && systemctl restart {APP.service}")
    host.run_expect([0], f"for i in $(seq 50); do systemctl is-active -q {APP.service} && exit 0; sleep 0.2; done; exit 1")


@pytest.fixture(scope="module")
def planted(deployed, testinfra_hosts):
    host = testinfra_hosts[NODE]
    host.run_expect([0], f"mkdir -p {PLANTED_DIR} /run/systemd/system/{APP.service}.service.d")
    # One folder on the node holds both: its PYTHONPATH is that folder alone.
    for planted_file in (PLANTED / "sitecustomize.py", COSTS):
        host.run_expect([0], f"cat > {PLANTED_DIR}/{planted_file.name} <<'PLANTED'\n{planted_file.read_text()}\nPLANTED")
    host.run_expect([0], f"printf '[Service]\\nEnvironment=PYTHONPATH={PLANTED_DIR}\\n' > {DROP_IN}")
    _restart(host)
    yield
    host.run_expect([0], f"rm -rf {PLANTED_DIR} {DROP_IN}")
    _restart(host)


def lab_client():
    return profiling.toy_redis_client(LAB_TOPOLOGY, NODE)


def test_the_hot_function_tops_the_cpu_profile(planted, tmp_path, capsys):
    with Load(lab_client, "PLANTED.HOT", 50):
        assert main(["profile", NODE, "toy_redis", "--seconds", "5", "-o", str(tmp_path),
                     "--inventory", str(LAB_INVENTORY)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"top: deliberate_hot_spot ({COSTS.name}:")
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".json", ".svg"]
    assert "deliberate_hot_spot" in next(tmp_path.glob("*.svg")).read_text()


def test_the_leaking_line_tops_the_memory_growth(planted, tmp_path, capsys):
    with Load(lab_client, "PLANTED.LEAK", 64, pause=0.01):
        assert main(["profile", NODE, "toy_redis", "--memory", "--seconds", "3", "-o", str(tmp_path),
                     "--inventory", str(LAB_INVENTORY)]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith(f"growth: {COSTS.name}:{LEAK_LINE} +")
