"""Fixtures shared by the lab tests: the booted lab, a deploy of deploys/all.py, testinfra hosts.

The lab is brought up once per session (reused if it is already running, and then left running);
a lab this session started is taken down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from homelab.lab.inventory import inventory_groups as read_inventory

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LAB_INVENTORY = REPO / "inventory" / "lab.py"


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "lab tests need root to boot systemd-nspawn nodes (run ./dev test as root)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap")):
        if not shutil.which(tool):
            return f"{tool} is missing: apt-get install {package} (./dev setup does it)"
    return None


def scratch_lab_test(function):
    """Marks a test that boots a scratch lab of its own with the lab tool (not the shared `lab`
    fixture): a slow lab test, skipped with the reason when this machine cannot run the lab."""
    reason = lab_unavailable_reason()
    for mark in (pytest.mark.lab, pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=reason or "")):
        function = mark(function)
    return function


def inventory_groups(path: Path = LAB_INVENTORY) -> dict[str, set[str]]:
    """host name -> inventory groups, read the way pyinfra reads an inventory file."""
    return {name: groups for name, (_data, groups) in read_inventory(path).items()}


def lab_address(name: str) -> str:
    """The lab address of inventory host ``name``."""
    return read_inventory(LAB_INVENTORY)[name][0]["ssh_hostname"]


def wheel_target(node):
    """The wheel target roles.python_app picks for a testinfra host: its Debian release's Python, its CPU."""
    from homelab.releases import RELEASES
    from roles.python_app import WheelTarget

    version = int(node.check_output(". /etc/os-release && echo $VERSION_ID"))
    return WheelTarget.for_release(RELEASES[version], node.check_output("uname -m"))


def hosts_in(group: str) -> list[str]:
    return sorted(name for name, groups in inventory_groups().items() if group in groups)


ALL_HOSTS = sorted(inventory_groups())


@dataclass
class PyinfraRun:
    returncode: int
    report: dict | None
    stderr: str

    def changed(self) -> list[tuple[str, list[str]]]:
        """(operation name, hosts it changed) for every operation that changed something."""
        ops = (self.report or {}).get("results", {}).get("operations", [])
        return [(op["name"], op["success"]) for op in ops if op["success"]]

    def failed(self) -> list[tuple[str, list[str]]]:
        ops = (self.report or {}).get("results", {}).get("operations", [])
        return [(op["name"], op["error"]) for op in ops if op["error"]]


def run_pyinfra(*args: str, inventory: Path = LAB_INVENTORY, timeout: int = 1200,
                env: dict | None = None) -> PyinfraRun:
    """Run the pyinfra CLI from the repo root, as a user would, with its JSON report."""
    result = subprocess.run(
        [str(VENV_BIN / "pyinfra"), "-y", "--json", str(inventory), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        report = json.loads(result.stdout) if result.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return PyinfraRun(result.returncode, report, result.stderr + ("" if report else result.stdout))


def dry_run_error(host: str, about: str, *data: str) -> str:
    """The one error line of a `--dry` deploy of ``host`` with ``data`` (KEY=VALUE each) that must
    stop while operations are prepared, before anything could run: the line mentioning ``about``."""
    run = run_pyinfra("--dry", "deploys/all.py", "--limit", host, *[arg for item in data for arg in ("--data", item)])
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if about in line]
    assert len(errors) == 1, run.stderr
    return errors[0]


# What a user adds to inventory/group_data/all.py to turn TLS and logins on across the cluster.
TLS_ON = {"tls": True}


@pytest.fixture(scope="session")
def tls_inventory(tmp_path_factory) -> Path:
    """A copy of the lab's inventory with `pki = TLS_ON` added to group_data/all.py (for the
    homelab CLI's --inventory)."""
    folder = tmp_path_factory.mktemp("inventory")
    shutil.copytree(LAB_INVENTORY.parent, folder, dirs_exist_ok=True)
    with open(folder / "group_data" / "all.py", "a") as all_data:
        all_data.write(f"\npki = {TLS_ON!r}\n")
    return folder / LAB_INVENTORY.name


@pytest.fixture(scope="session")
def tls_topology(tls_inventory):
    """The topology of tls_inventory."""
    from homelab.topology import Topology

    return Topology.load(tls_inventory)


@pytest.fixture(scope="session")
def lab():
    """The lab booted from inventory/lab.py; its LabSettings."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        from homelab.lab import api
    except ImportError as exc:
        pytest.skip(f"the lab tool's API (homelab.lab.api) cannot be imported here: {exc}")
    from homelab.lab.settings import lab_settings

    was_running = api.is_up(LAB_INVENTORY)
    api.up(LAB_INVENTORY)
    yield lab_settings()
    if not was_running and not os.environ.get("HOMELAB_KEEP_LAB"):
        api.down()


@pytest.fixture(scope="session")
def deployed(lab) -> PyinfraRun:
    """deploys/all.py applied to the lab once per session."""
    run = run_pyinfra("deploys/all.py")
    assert run.returncode == 0 and not run.failed(), f"deploy failed:\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="session")
def testinfra_hosts(lab):
    """host name -> testinfra host over SSH with the lab's ssh_config (strict host keys)."""
    import testinfra

    return {
        name: testinfra.get_host(f"ssh://{name}", ssh_config=str(lab.ssh_config))
        for name in ALL_HOSTS
    }
