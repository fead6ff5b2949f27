"""toy-redis and the alert relay on a node whose runtime is `container` (roles/container_runtime).

The reference lab (inventory/lab.py) keeps every node on the package install, which other tests
rely on; this module boots a lab of its own (own subnet, bridge and state, like
tests/lab/test_releases.py) from an inventory variant: one node in the toy_redis, alert_relay and
prometheus and alertmanager groups with host data `runtime = "container"`, and the reference group
data; the relay posts to a fake Slack on the control machine (tests/alert_relay/fakes.py), as in
tests/hosts/test_backup.py. It checks what a user relies on: the services answer where the topology
says, an alert sent to Alertmanager reaches Slack through the relay's container, Prometheus has
what both containers report, the log file the shipper tails gets the container's lines, no secret
shows in `docker inspect` or the process list, data outlives the container and a switch of runtime
either way, a second deploy changes nothing, and the containers serve TLS behind the firewall
once `pki.tls` is on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from alert_relay.routes import load_routes
from homelab.access import access
from homelab.lab.settings import lab_settings
from homelab.topology import Topology
from homelab.vault import load_vault
from roles import alert_relay, alloy, firewall, pki, promtail, toy_redis
from tests.alert_relay.fakes import FakeSlack
from tests.conftest import REPO, TLS_ON, lab_unavailable_reason, run_pyinfra
from tests.hosts.test_alert_relay import alert_payload, metric
from tests.lab.test_lab_tool import run_lab, ssh_out

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ENV = {"HOMELAB_LAB_SUBNET": "10.84.0.0/24", "HOMELAB_LAB_BRIDGE": "hlabctr0"}
NODE = "container-node"
ROLES = "base,tuning,node_exporter,toy_redis,alert_relay,alertmanager,prometheus"
INVENTORY = """\
from homelab.lab.settings import lab_host

_node = lab_host({node!r}, 10, runtime="container"{extra})
toy_redis = [_node]
alert_relay = [_node]
alertmanager = [_node]
prometheus = [_node]
"""
# A restarted unit, a recreated container or a Prometheus scrape take a few seconds on a busy box.
WITHIN_S = 90
# Alertmanager holds a new group for group_wait (30 s, alerts/routes.yaml) before the relay gets it.
ALERT_WITHIN_S = 150


def node_data(**data) -> str:
    return "".join(f", {key}={value!r}" for key, value in data.items())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("container-lab")
    (folder / "inventory.py").write_text(INVENTORY.format(node=NODE, extra=""))
    # The same node as a user turning TLS on sees it (test_tls_and_the_firewall_on...).
    (folder / "inventory_tls.py").write_text(INVENTORY.format(node=NODE, extra=node_data(pki=TLS_ON)))
    # The reference cluster's group data, found where pyinfra and the topology look for it.
    (folder / "group_data").symlink_to(REPO / "inventory" / "group_data")
    lab_env = {**ENV, "HOMELAB_LAB_STATE": str(folder / "state"), "INVENTORY": str(folder / "inventory.py"),
               "INVENTORY_TLS": str(folder / "inventory_tls.py")}
    try:
        up = run_lab("up", lab_env["INVENTORY"], env=lab_env, timeout=900)
        assert up.returncode == 0, up.stderr
        yield lab_env
    finally:
        down = run_lab("down", env=lab_env)
        assert down.returncode == 0, down.stderr


def deploy(env, *data: str, roles: str = ROLES, inventory: str = "INVENTORY"):
    # The relay posts to the fake Slack on the control machine (slack fixture), in every deploy.
    data = ("alert_relay=" + json.dumps({"slack_base_url": env["SLACK_BASE_URL"]}), *data)
    args = ["deploys/all.py", "--data", f"only_roles={roles}", *[arg for item in data for arg in ("--data", item)]]
    return run_pyinfra(*args, inventory=Path(env[inventory]), env=env, timeout=1800)


def in_side_lab(env, action):
    """``action()`` with the side lab's settings in the environment (lab_host and lab_settings read it)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return action()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def topology(env) -> Topology:
    return in_side_lab(env, lambda: Topology.load(env["INVENTORY"]))


@pytest.fixture(scope="module")
def vault() -> dict:
    return load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")


@pytest.fixture(scope="module")
def slack(env, vault):
    """A fake Slack on the side lab's bridge address, serving for the whole module, with the channels
    alerts/routes.yaml names."""
    gateway = str(in_side_lab(env, lab_settings).gateway)
    routes = load_routes(REPO / alert_relay.Settings().routes)
    names = {routes.default_channel, *(route.channel for route in routes.alerts), *(route.channel for route in routes.faxes)}
    fake = FakeSlack(vault["slack_bot_token"], {name: f"C0{index:07d}" for index, name in enumerate(sorted(names))},
                     bind=gateway).start()
    env["SLACK_BASE_URL"] = fake.base_url
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def deployed(env, slack):
    first = deploy(env)
    assert first.returncode == 0 and not first.failed(), first.stderr[-4000:]
    return first


@pytest.fixture
def client(topology, vault):
    resp = topology.endpoint("toy_redis", NODE, "resp")
    connection = redis.Redis(host=resp.address, port=resp.port, password=vault["toy_redis_password"],
                             socket_timeout=5)
    yield connection
    connection.close()


def wait_for(condition, what: str, within: float = WITHIN_S):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except (OSError, redis.exceptions.ConnectionError, requests.RequestException):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


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


def test_an_alert_sent_to_alertmanager_reaches_slack_through_the_relays_container(deployed, topology, slack):
    name = f"ContainerAlert{uuid.uuid4().hex[:12]}"
    labels = {"alertname": name, "severity": "warning", "instance": NODE}
    sent = access(topology, "alertmanager", NODE).request(
        "POST", "/api/v2/alerts", json=[{"labels": labels, "annotations": {"summary": "sent by test_containers"}}])
    assert sent.ok, sent.text
    channel = load_routes(REPO / alert_relay.Settings().routes).alert_channel(labels)
    posts = wait_for(lambda: [post for post in slack.posts(slack.channels[channel].id) if name in json.dumps(post)],
                     f"{name} posted to {channel}", within=ALERT_WITHIN_S)
    assert len(posts) == 1
    relay = access(topology, "alert_relay", NODE)
    assert metric(relay.get("/metrics").text, "alert_relay_accepted_total") >= 1


def prometheus_value(topology, query: str) -> float | None:
    result = access(topology, "prometheus", NODE).get("/api/v1/query", params={"query": query}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_has_what_both_containers_report(env, deployed, topology, client):
    redis_instance = topology.endpoint("toy_redis", NODE, "metrics").instance
    relay = access(topology, "alert_relay", NODE)
    client.set(f"container:scraped:{uuid.uuid4().hex}", "1")
    keys = client.dbsize()  # no other test writes meanwhile
    wait_for(lambda: prometheus_value(topology, f'toy_redis_keys{{instance="{redis_instance}"}}') == keys,
             f"Prometheus to scrape toy-redis's {keys} keys from {redis_instance}")
    accepted = metric(relay.get("/metrics").text, "alert_relay_accepted_total")
    assert accepted >= 1  # the alert of the test before
    relay_instance = relay.endpoint.instance
    # At least: Alertmanager may send the relay more meanwhile.
    wait_for(lambda: (prometheus_value(topology, f'alert_relay_accepted_total{{instance="{relay_instance}"}}') or 0)
             >= accepted, f"Prometheus to scrape the relay's {accepted:.0f} accepted alerts from {relay_instance}")
    assert relay.get("/healthz").status_code == 200


def test_the_containers_log_lines_land_in_the_host_file_the_shipper_tails(env, deployed, topology):
    # Either log shipper tails toy-redis's file unless told otherwise.
    [tailed] = {shipper.Settings.model_fields["toy_redis_log"].default for shipper in (alloy, promtail)}
    assert tailed == toy_redis.LOG_FILE
    assert ssh_out(env, NODE, f"stat -c '%U %G' {tailed}") == f"{toy_redis.APP.service} {toy_redis.LOG_GROUP}"
    # A malformed frame makes the server log a protocol_error naming the client: ours, by its port.
    resp = topology.endpoint("toy_redis", NODE, "resp")
    with socket.create_connection((resp.address, resp.port), timeout=5) as connection:
        client_port = connection.getsockname()[1]
        connection.sendall(b"*1\r\n$notanumber\r\n")
        assert connection.recv(1024).startswith(b"-ERR")
    wanted = f":{client_port}"

    def logged():
        lines = ssh_out(env, NODE, f"grep -F protocol_error {tailed} || true").splitlines()
        return [entry for entry in map(json.loads, lines) if entry["client"].endswith(wanted)]

    [entry] = wait_for(logged, f"a protocol_error line for the client on port {client_port} in {tailed}")
    assert entry["level"] == "info"


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
    """Alerts in the relay's queue, waiting for Slack or given up on."""
    text = relay.get("/metrics").text
    return metric(text, "alert_relay_queue_depth") + metric(text, "alert_relay_dead_letters")


def test_keys_and_queue_survive_the_container_being_removed(env, deployed, client, topology, vault, slack):
    relay = access(topology, "alert_relay", NODE)
    client.set("container:survives", "rm -f")
    slack.outage(10 * WITHIN_S)  # Slack answers 503: the relay keeps the alert queued
    try:
        accepted = requests.post(relay.url("/alertmanager"), json=alert_payload(f"ContainerTest{time.time_ns()}"),
                                 headers={"Authorization": f"Bearer {vault['alertmanager_webhook_token']}"},
                                 timeout=5, verify=relay.verify)
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
    finally:
        slack.outage(0)


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


TLS_ROLES = f"{ROLES},pki,firewall"


@pytest.fixture(scope="module")
def tls_topology(env) -> Topology:
    return in_side_lab(env, lambda: Topology.load(env["INVENTORY_TLS"]))


@pytest.fixture(scope="module")
def tls_deployed(env, deployed, topology, vault):
    """pki.tls and the firewall on, as a user turns them on: the last tests of the module (the node
    stays so until the side lab goes)."""
    with access(topology, "toy_redis", NODE, "resp").redis(password=vault[toy_redis.PASSWORD_SECRET]) as plain:
        plain.set("container:tls", "before")
    on = deploy(env, roles=TLS_ROLES, inventory="INVENTORY_TLS")
    assert on.returncode == 0 and not on.failed(), on.stderr[-4000:]
    return on


def test_tls_and_the_firewall_on_the_containers_serve_tls_and_prometheus_scrapes_them(env, tls_deployed,
                                                                                      tls_topology, vault):
    assert ssh_out(env, NODE, f"nft list table inet {firewall.TABLE} >/dev/null && echo loaded") == "loaded"
    for role in (toy_redis, alert_relay):
        # The container reads the node's certificate and key from the host, read-only.
        mounts = ssh_out(env, NODE, "docker inspect --format '{{range .Mounts}}{{.Destination}}={{.RW}} {{end}}' "
                                    f"{role.APP.service}")
        assert f"{pki.TLS_DIR}=false" in mounts.split(), role.APP.service

    resp = access(tls_topology, "toy_redis", NODE, "resp")
    assert resp.tls
    with resp.redis(password=vault[toy_redis.PASSWORD_SECRET], socket_timeout=5) as over_tls:
        assert wait_for(lambda: over_tls.get("container:tls"), "toy-redis over TLS") == b"before"
    relay = access(tls_topology, "alert_relay", NODE)
    assert relay.url().startswith("https://") and relay.get("/healthz").status_code == 200

    wanted = {tls_topology.endpoint("toy_redis", NODE, "metrics").instance, relay.endpoint.instance}
    prometheus = access(tls_topology, "prometheus", NODE)

    def scraped_over_https():
        active = prometheus.get("/api/v1/targets", params={"state": "active"}).json()["data"]["activeTargets"]
        return wanted <= {target["labels"]["instance"] for target in active
                          if target["health"] == "up" and target["scrapeUrl"].startswith("https://")}

    wait_for(scraped_over_https, f"Prometheus to scrape {sorted(wanted)} over https")


def test_a_second_deploy_with_tls_on_changes_nothing(env, tls_deployed):
    again = deploy(env, roles=TLS_ROLES, inventory="INVENTORY_TLS")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.changed() == []
    # Both services' users share the home /nonexistent, which must stay nonexistent.
    assert ssh_out(env, NODE, "test -e /nonexistent && echo exists || echo absent") == "absent"
