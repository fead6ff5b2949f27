"""`homelab profile` against our services on their lab nodes, with a planted hot spot and leak,
through the command an operator runs:

- toy-redis (SSH and py-spy from the node's venv; the RESP port with the vault's password): the hot
  function tops the CPU profile and the leaking line tops the memory growth.
- the alert relay, deployed with pki.tls on for its node only (its allocation view is served only
  behind its metrics login): the leaking line tops the memory growth, and tracing is off again after.

The planted code (toy-redis: tests/profiling/planted/sitecustomize.py; the relay:
tests/pprof_sampler/planted_relay/sitecustomize.py; both with the costs of tests/planted/planted_costs.py
they import) is put on the node for this module only, in /run and a runtime drop-in of the unit, and
removed after it (the service restarted on its deployed files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

import roles.alert_relay
from homelab import profiling
from homelab.access import access
from homelab.cli import main
from roles.python_app import PythonApp
from roles.toy_redis import APP
from tests.conftest import LAB_INVENTORY, hosts_in, run_pyinfra
from tests.loopback import wait_for
from tests.planted import COSTS, LEAK_LINE
from tests.pprof_sampler.test_alert_relay import PLANTED as PLANTED_RELAY
from tests.pprof_sampler.test_relay_allocations import LEAK_KB, tracing
from tests.profiling.conftest import PLANTED, Load
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

NODE = hosts_in("toy_redis")[0]
PLANTED_DIR = "/run/homelab-test-planted"


def _restart(host, app: PythonApp) -> None:
    host.run_expect([0], f"systemctl daemon-reload && systemctl restart {app.service}")
    host.run_expect([0], f"for i in $(seq 50); do systemctl is-active -q {app.service} && exit 0; sleep 0.2; done; exit 1")


def _planting(host, app: PythonApp, hook: Path, folder: str, environment: dict[str, str]):
    """Puts ``hook`` (a sitecustomize.py) and the costs in ``folder`` on the node, starts ``app``
    with them (and ``environment``) and, when resumed, restarts it without them."""
    drop_in = f"/run/systemd/system/{app.service}.service.d/planted.conf"
    host.run_expect([0], f"mkdir -p {folder} /run/systemd/system/{app.service}.service.d")
    # One folder on the node holds both: its PYTHONPATH is that folder alone.
    for planted_file in (hook, COSTS):
        host.run_expect([0], f"cat > {folder}/{planted_file.name} <<'PLANTED'\n{planted_file.read_text()}\nPLANTED")
    settings = "".join(f"Environment={name}={value}\\n" for name, value in {"PYTHONPATH": folder, **environment}.items())
    host.run_expect([0], f"printf '[Service]\\n{settings}' > {drop_in}")
    _restart(host, app)
    yield
    host.run_expect([0], f"rm -rf {folder} {drop_in}")
    _restart(host, app)


@pytest.fixture(scope="module")
def planted(deployed, testinfra_hosts):
    yield from _planting(testinfra_hosts[NODE], APP, PLANTED / "sitecustomize.py", PLANTED_DIR, {})


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


RELAY_NODE = hosts_in("alert_relay")[0]
RELAY_PLANTED_DIR = "/run/homelab-test-planted-relay"
# While this file exists on the node, the planted relay keeps the KB written in it more every 10 ms.
RELAY_LEAK_FILE = f"{RELAY_PLANTED_DIR}/leak"


@pytest.fixture(scope="module")
def relay_tls(deployed, tls_data):
    """The relay's node deployed with pki.tls on (its allocation view needs its login), and with the
    lab's own settings again after the module. The other nodes keep theirs: only this node's
    listeners are asked."""
    on = run_pyinfra("deploys/all.py", "--limit", RELAY_NODE, *tls_data)
    assert on.returncode == 0 and not on.failed(), on.stderr[-4000:]
    yield
    off = run_pyinfra("deploys/all.py", "--limit", RELAY_NODE)
    assert off.returncode == 0 and not off.failed(), off.stderr[-4000:]


@pytest.fixture(scope="module")
def planted_relay(relay_tls, testinfra_hosts, tls_topology):
    planting = _planting(testinfra_hosts[RELAY_NODE], roles.alert_relay.APP, PLANTED_RELAY / "sitecustomize.py",
                         RELAY_PLANTED_DIR, {"PLANTED_LEAK_FILE": RELAY_LEAK_FILE})
    next(planting)
    # Its unit is active as soon as the process starts; the port opens a moment later.
    wait_for(lambda: _answers(access(tls_topology, "alert_relay", RELAY_NODE)), timeout=30, what="the relay's port")
    yield
    next(planting, None)


def _answers(relay) -> bool:
    try:
        return relay.get("/healthz", timeout=5).ok
    except requests.ConnectionError:
        return False


def test_the_relays_leaking_line_tops_the_memory_growth_and_tracing_ends(planted_relay, testinfra_hosts,
                                                                        tls_inventory, tls_topology, tmp_path, capsys):
    host = testinfra_hosts[RELAY_NODE]
    relay = access(tls_topology, "alert_relay", RELAY_NODE)
    assert tracing(relay) == 0
    host.run_expect([0], f"echo {LEAK_KB} > {RELAY_LEAK_FILE}.new && mv {RELAY_LEAK_FILE}.new {RELAY_LEAK_FILE}")
    try:
        assert main(["profile", RELAY_NODE, "alert_relay", "--memory", "--seconds", "3", "-o", str(tmp_path),
                     "--inventory", str(tls_inventory)]) == 0
    finally:
        host.run_expect([0], f"rm -f {RELAY_LEAK_FILE}")
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith(f"growth: {COSTS.name}:{LEAK_LINE} +"), summary
    [report] = tmp_path.glob("*.allocations.json")
    top = max(json.loads(report.read_text()), key=lambda site: site["growth"])
    # The node's copy of the costs, the line that keeps the bytes: over a MiB in 3 s at LEAK_KB per 10 ms.
    assert (top["file"], top["line"]) == (f"{RELAY_PLANTED_DIR}/{COSTS.name}", LEAK_LINE)
    assert top["growth"] > 2**20
    # The view ended its tracing by itself: no tracemalloc overhead left in the relay.
    assert tracing(relay) == 0
