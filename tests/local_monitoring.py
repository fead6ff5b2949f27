"""Real Prometheus and Alertmanager (Debian's packages) on loopback, for an inventory whose hosts all
live at 127.0.0.1 with every service on its own free port, so `homelab` commands run against them
unchanged: node names, services, ports and the Prometheus config all come from the topology."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import requests
import yaml

from homelab.topology import ROLES, Topology
from tests.alert_relay.conftest import ALERTMANAGER, free_port, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
LAB_INVENTORY = Path(__file__).resolve().parents[1] / "inventory" / "lab.py"


def listener_ports() -> dict[str, dict[str, int | str]]:
    """Group-data-style settings putting every role's listeners on free loopback ports."""
    data: dict[str, dict[str, int | str]] = {}
    for role in ROLES:
        if not role.listeners:
            continue
        fields = import_module(f"roles.{role.name}").Settings.model_fields
        for setting in {name for listener in role.listeners for name in (listener.setting, listener.tls_setting) if name}:
            port = free_port()
            data.setdefault(role.name, {})[setting] = (
                f"127.0.0.1:{port}" if isinstance(fields[setting].default, str) else port)
    return data


def loopback_inventory(directory: Path, groups: dict[str, list[str]] | None = None,
                       host_data: dict[str, object] | None = None) -> Path:
    """An inventory file in ``directory`` with the lab's group data: ``groups`` (default: the lab's
    groups and hosts), every host at 127.0.0.1 with its own free ports, and ``host_data`` besides."""
    import runpy

    (directory / "inventory").mkdir(parents=True)
    shutil.copytree(LAB_INVENTORY.parent / "group_data", directory / "inventory" / "group_data")
    if groups is None:
        groups = {name: [host for host, _data in members] for name, members in runpy.run_path(str(LAB_INVENTORY)).items()
                  if not name.startswith("_") and isinstance(members, list)}
    group_data = {file.stem: runpy.run_path(str(file)) for file in (directory / "inventory" / "group_data").glob("*.py")}
    data = {}
    for host in {host for members in groups.values() for host in members}:
        # A host's data for a role replaces its groups' (pyinfra does not merge them): merge here.
        host_groups = ["all", *(group for group, members in groups.items() if host in members)]
        data[host] = {"ssh_hostname": "127.0.0.1", **(host_data or {})}
        for role, ports in listener_ports().items():
            merged = {}
            for group in host_groups:
                merged.update(group_data.get(group, {}).get(role) or {})
            data[host][role] = {**merged, **ports}
    lines = [f"{group} = {[(host, data[host]) for host in members]!r}" for group, members in groups.items()]
    path = directory / "inventory" / "hosts.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _until_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    def ready():
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            return requests.get(f"{url}/-/ready", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(ready, 30, f"{url} to be ready", interval=0.2)


@contextlib.contextmanager
def _serving(log: Path, url: str, command: list[str]) -> Iterator[str]:
    """``command`` running with its output in ``log`` until the block ends; yields ``url`` once ready."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            _until_ready(process, url, log)
            yield url
        finally:
            _stop(process)


@contextlib.contextmanager
def alertmanager(directory: Path, topology: Topology) -> Iterator[str]:
    """Alertmanager where the topology puts it, notifying nobody; yields its URL."""
    endpoint = topology.endpoint("alertmanager")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alertmanager.yml").write_text(yaml.safe_dump({"route": {"receiver": "none"},
                                                                "receivers": [{"name": "none"}]}))
    with _serving(directory / "alertmanager.log", endpoint.url(),
                  [ALERTMANAGER, f"--config.file={directory / 'alertmanager.yml'}",
                   f"--storage.path={directory / 'am-data'}", f"--web.listen-address={endpoint.netloc}",
                   "--cluster.listen-address="]) as url:
        yield url


@contextlib.contextmanager
def prometheus(directory: Path, topology: Topology, rule_files: dict[str, str]) -> Iterator[str]:
    """Prometheus where the topology puts it, with the config the prometheus role renders (every
    scrape a second) and ``rule_files``; yields its URL."""
    from roles.prometheus import Settings, render_config

    endpoint = topology.endpoint("prometheus")
    rules = directory / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for name, content in rule_files.items():
        (rules / name).write_text(content)
    settings = Settings(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    (directory / "prometheus.yml").write_text(render_config(settings, topology, rules_dir=str(rules)))
    with _serving(directory / "prometheus.log", endpoint.url(),
                  [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
                   f"--storage.tsdb.path={directory / 'tsdb'}", f"--web.listen-address={endpoint.netloc}"]) as url:
        yield url


def blackbox_probe(port: int, module: str, target: str) -> dict[str, float]:
    """The unlabelled samples of a probe of ``target`` with ``module`` by the blackbox exporter listening
    on loopback ``port`` (waiting for it to answer)."""
    def answer():
        try:
            return requests.get(f"http://127.0.0.1:{port}/probe", timeout=10,
                                params={"module": module, "target": target}).text
        except requests.ConnectionError:
            return None
    text = wait_for(answer, 20, "blackbox to answer", interval=0.2)
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}
