"""toy-redis and the alert relay on a node whose runtime is `container` (roles/container_runtime).

The reference lab (inventory/lab.py) keeps every node on the package install, which other tests
rely on; this module boots a lab of its own (own subnet, bridge and state, like
tests/lab/test_releases.py) from an inventory variant: one node in the toy_redis, alert_relay and
prometheus groups with host data `runtime = "container"`, and the reference group data. It checks
what a user relies on: the services answer where the topology says, Prometheus scrapes them,
no secret shows in `docker inspect` or the process list, data outlives the container and a switch
of runtime either way, and a second deploy changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from homelab.topology import Topology
from homelab.vault import load_vault
from roles import alert_relay, toy_redis
from tests.conftest import REPO, lab_unavailable_reason, run_pyinfra
from tests.hosts.test_alert_relay import alert_payload, metric
from tests.lab.test_lab_tool import run_lab, ssh_out

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ENV = {"HOMELAB_LAB_SUBNET": "10.84.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabctr0"}
NODE = "container-node"
ROLES = "base,tuning,node_exporter,toy_redis,alert_relay,prometheus"
INVENTORY = f"""\
from homelab.lab.settings import lab_host

_node = lab_host({NODE!r}, 10, runtime="container")
toy_redis = [_node]
alert_relay = [_node]
prometheus = [_node]
"""
# A restarted unit, a recreated container or a Prometheus scrape take a few seconds on a busy box.
WITHIN_S = 90


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("container-lab")
    (folder / "inventory.py").write_text(INVENTORY)
    # The reference cluster's group data, found where pyinfra and the topology look for it.
    (folder / "group_data").symlink_to(REPO / "inventory" / "group_data")
    lab_env = {**ENV, "HOMELAB_LAB_STATE": str(folder / "state"), "INVENTORY": str(folder / "inventory.py")}
    try:
        up = run_lab("up", lab_env["INVENTORY"], env=lab_env, timeout=900)
        assert up.returncode == 0, up.stderr
        yield lab_env
    finally:
        down = run_lab("down", env=lab_env)
        assert down.returncode == 0, down.stderr


def deploy(env, *data: str):
    args = ["deploys/all.py", "--data", f"only_roles={ROLES}", *[arg for item in data for arg in ("--data", item)]]
    return run_pyinfra(*args, inventory=Path(env["INVENTORY"]), env=env, timeout=1800)


@pytest.fixture(scope="module")
def topology(env) -> Topology:
    saved = dict(os.environ)
    os.environ.update(env)  # lab_host reads the subnet from the environment
    try:
        return Topology.load(env["INVENTORY"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def deployed(env):
    first = deploy(env)
    assert first.returncode == 0 and not first.failed(), first.stderr[-4000:]
    return first


@pytest.fixture(scope="module")
def vault() -> dict:
    return load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")


@pytest.fixture
def client(topology, vault):
    resp = topology.endpoint("toy_redis", NODE, "resp")
    connection = redis.Redis(host=resp.address, port=resp.port, password=vault["toy_redis_password"],
                             socket_timeout=5)
    yield connection
    connection.close()


def wait_for(condition, what: str):
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except (OSError, redis.exceptions.ConnectionError, requests.RequestException):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {WITHIN_S} s waiting for {what}")


def container_id(env, name: str) -> str:
    return ssh_out(env, NODE, f"docker ps --quiet --no-trunc --filter name=^/{name}$")


def redis_cli(topology, vault, *command: str) -> str:
    resp = topology.endpoint("toy_redis", NODE, "resp")
    # The password reaches redis-cli through its environment, not its command line.
    result = subprocess.run(["redis-cli", "-h", resp.address, "-p", str(resp.port), "--no-auth-warning", *command],
                            capture_output=True, text=True, timeout=10,
                            env={**os.environ, "REDISCLI_AUTH": vault["toy_redis_password"]})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_both_services_run_from_their_images_under_their_units(env, deployed):
    for role in (toy_redis, alert_relay):
        service = role.APP.service
        assert ssh_out(env, NODE, f"systemctl is-active {service}") == "active"
        assert container_id(env, service)
        image = ssh_out(env, NODE, f"docker inspect --format '{{{{.Config.Image}}}}' {service}")
        assert image == role.container(role.Settings(), 1024).image
        # No venv on the node: the image is what runs.
        assert ssh_out(env, NODE, f"test -e {role.APP.current} && echo venv || echo none") == "none"


def test_redis_cli_works_against_the_container(env, deployed, topology, vault):
    assert redis_cli(topology, vault, "SET", "container:cli", "from-redis-cli") == "OK"
    assert redis_cli(topology, vault, "GET", "container:cli") == "from-redis-cli"


def test_prometheus_scrapes_both_containers(env, deployed, topology):
    prometheus = topology.endpoint("prometheus", NODE)
    wanted = {topology.endpoint("toy_redis", NODE, "metrics").instance,
              topology.endpoint("alert_relay", NODE).instance}

    def targets_up():
        active = requests.get(prometheus.url("/api/v1/targets"), timeout=5).json()["data"]["activeTargets"]
        up = {target["labels"]["instance"] for target in active if target["health"] == "up"}
        return wanted <= up

    wait_for(targets_up, f"Prometheus to scrape {sorted(wanted)} successfully")
    relay = topology.endpoint("alert_relay", NODE)
    assert requests.get(relay.url("/healthz"), timeout=5).status_code == 200


def test_log_written_to_the_host_file_the_shipper_tails(env, deployed, client):
    client.set("container:log", "1")
    assert ssh_out(env, NODE, f"stat -c '%U %G' {toy_redis.LOG_FILE}") == f"{toy_redis.APP.service} {toy_redis.LOG_GROUP}"
    assert ssh_out(env, NODE, f"test -s {toy_redis.LOG_FILE} && echo written") == "written"


def test_no_secret_in_docker_inspect_or_the_process_list(env, deployed, vault):
    secrets = [vault["toy_redis_password"], *(vault[secret] for secret in alert_relay.TOKEN_FILES.values())]
    seen = ssh_out(env, NODE, "docker inspect toy-redis alert-relay; ps -eo args; systemctl cat toy-redis alert-relay")
    assert "--user" in seen and toy_redis.CONFIG_DIR in seen  # what was looked at is the real thing
    for secret in secrets:
        assert secret not in seen
    # The config folder, secrets in it, is mounted read-only.
    mounts = ssh_out(env, NODE, "docker inspect --format '{{range .Mounts}}{{.Destination}}={{.RW}} {{end}}' toy-redis")
    assert f"{toy_redis.CONFIG_DIR}=false" in mounts.split()
    assert f"{toy_redis.DATA_DIR}=true" in mounts.split()


def held_alerts(relay) -> float:
    """Alerts in the relay's queue, waiting for Slack (unreachable from the lab) or given up on."""
    text = requests.get(relay.url("/metrics"), timeout=5).text
    return metric(text, "alert_relay_queue_depth") + metric(text, "alert_relay_dead_letters")


def test_keys_and_queue_survive_the_container_being_removed(env, deployed, client, topology, vault):
    relay = topology.endpoint("alert_relay", NODE)
    client.set("container:survives", "rm -f")
    accepted = requests.post(relay.url("/alertmanager"), json=alert_payload(f"ContainerTest{time.time_ns()}"),
                             headers={"Authorization": f"Bearer {vault['alertmanager_webhook_token']}"}, timeout=5)
    assert accepted.status_code == 200, accepted.text
    held = held_alerts(relay)
    assert held >= 1
    time.sleep(1.5)  # appendfsync everysec: on disk within a second
    for service in ("toy-redis", "alert-relay"):
        old = container_id(env, service)
        ssh_out(env, NODE, f"docker rm --force {service}")
        # systemd starts a fresh container from the same image and host folders.
        wait_for(lambda: container_id(env, service) not in ("", old), f"a new {service} container")
    assert wait_for(lambda: client.get("container:survives"), "toy-redis to answer again") == b"rm -f"
    assert wait_for(lambda: held_alerts(relay) >= held, "the relay to answer with its queue")


def test_second_deploy_changes_nothing(env, deployed):
    again = deploy(env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == []


def test_switching_runtime_either_way_keeps_the_data(env, deployed, client):
    client.set("container:switch", "kept")
    to_systemd = deploy(env, "runtime=systemd")
    assert to_systemd.returncode == 0 and not to_systemd.failed(), to_systemd.stderr[-4000:]
    assert container_id(env, "toy-redis") == ""
    main_command = ssh_out(env, NODE, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value toy-redis)/cmdline")
    # The venv's script, run by the venv's python (the kernel resolves its shebang).
    assert toy_redis.APP.binary() in main_command.split() and "docker" not in main_command
    assert wait_for(lambda: client.get("container:switch"), "toy-redis from its venv") == b"kept"
    client.set("container:switch", "kept twice")

    back = deploy(env)
    assert back.returncode == 0 and not back.failed(), back.stderr[-4000:]
    wait_for(lambda: container_id(env, "toy-redis"), "the toy-redis container again")
    assert wait_for(lambda: client.get("container:switch"), "toy-redis from its image") == b"kept twice"
    assert deploy(env).changed() == []
