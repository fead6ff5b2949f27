"""Both images run as a person would run them: `docker run --network host --read-only`, config and
secrets (the lab vault's values) bind-mounted read-only, data and log folders from the host.

The mounts use the roles' own paths and rendered configs, so a container sees what a node has.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis
import requests
import yaml
from docker.types import Mount

from homelab.containers import images
from roles import alert_relay as relay_role
from roles import toy_redis as redis_role
from tests.alert_relay.conftest import notification
from tests.alert_relay.fakes import FakeSlack

from .conftest import free_port, image_user_ids
from .test_images import lab_secrets

pytestmark = pytest.mark.slow

# The image's HEALTHCHECK runs every 10 s after a 5 s start period; allow a few rounds on a busy box.
HEALTHY_WITHIN_S = 60
START_WITHIN_S = 30


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (OSError, redis.exceptions.ConnectionError, requests.ConnectionError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def health(container) -> str:
    container.reload()
    return container.attrs["State"]["Health"]["Status"]


def owned(path: Path, uid: int, gid: int, mode: int, content: str | None = None) -> Path:
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def run_service(client, spec, mounts: list[Mount]):
    return client.containers.run(spec.tag, detach=True, network_mode="host", read_only=True, mounts=mounts)


@pytest.fixture
def containers():
    started = []
    yield started
    for container in started:
        container.remove(force=True)


def test_toy_redis_container_serves_with_its_password_and_keeps_data_on_the_host(built_images, tmp_path, containers):
    client = built_images.client
    spec = images.specs()["toy-redis"]
    uid, gid = image_user_ids(client, spec.tag)
    password = lab_secrets()[redis_role.PASSWORD_SECRET]
    settings = redis_role.Settings(bind="127.0.0.1", port=free_port(), metrics_bind="127.0.0.1",
                                   metrics_port=free_port())
    # As the role writes them on a node: root-owned, readable by the service's group only.
    etc = owned(tmp_path / "etc", 0, gid, 0o750)
    owned(etc / Path(redis_role.CONFIG_PATH).name, 0, gid, 0o640, redis_role.render_config(settings))
    owned(etc / Path(redis_role.REQUIREPASS_PATH).name, 0, gid, 0o640, password)
    data = owned(tmp_path / "data", uid, gid, 0o750)
    logs = owned(tmp_path / "log", uid, gid, 0o755)
    mounts = [Mount(redis_role.CONFIG_DIR, str(etc), type="bind", read_only=True),
              Mount(redis_role.DATA_DIR, str(data), type="bind"),
              Mount(redis_role.LOG_DIR, str(logs), type="bind")]
    containers.append(run_service(client, spec, mounts))

    server = redis.Redis(host="127.0.0.1", port=settings.port, password=password, socket_timeout=5)
    wait_for(server.ping, START_WITHIN_S, "toy-redis in its container to answer PING")
    assert server.set("greeting", "hello from a container")
    assert server.get("greeting") == b"hello from a container"
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=settings.port, password="not-the-password").ping()
    assert requests.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5).ok
    wait_for(lambda: health(containers[0]) == "healthy", HEALTHY_WITHIN_S, "the toy-redis healthcheck to pass")
    assert (logs / Path(redis_role.LOG_FILE).name).read_text(), "log lines land in the host's log folder"

    # The container goes; the data stays on the host and a new container serves it.
    containers.pop().remove(force=True)
    containers.append(run_service(client, spec, mounts))
    wait_for(server.ping, START_WITHIN_S, "the new toy-redis container to answer PING")
    assert server.get("greeting") == b"hello from a container"


def test_alert_relay_container_is_healthy_and_delivers_an_alert_with_the_vault_token(built_images, tmp_path,
                                                                                    containers):
    client = built_images.client
    spec = images.specs()["alert-relay"]
    uid, gid = image_user_ids(client, spec.tag)
    secrets = lab_secrets()
    routes = yaml.safe_load((relay_role.REPO_ROOT / "alerts/routes.yaml").read_text())["slack"]
    channels = {routes["default_channel"], *(route["channel"] for route in routes["alerts"] + routes["faxes"])}
    slack = FakeSlack(secrets["slack_bot_token"], {name: f"C{n:010d}" for n, name in enumerate(sorted(channels))})
    slack.start()
    try:
        port = free_port()
        settings = relay_role.Settings(listen=f"127.0.0.1:{port}", slack_base_url=slack.base_url)
        etc = owned(tmp_path / "etc", 0, gid, 0o750)
        owned(etc / Path(relay_role.CONFIG_PATH).name, 0, gid, 0o640, relay_role.render_config(settings))
        owned(etc / Path(relay_role.ROUTES_PATH).name, 0, gid, 0o640, relay_role.read_routes(settings))
        for secret in relay_role.TOKEN_FILES.values():
            owned(etc / Path(relay_role.token_path(secret)).name, 0, gid, 0o640, secrets[secret])
        data = owned(tmp_path / "data", uid, gid, 0o750)
        mounts = [Mount(relay_role.CONFIG_DIR, str(etc), type="bind", read_only=True),
                  Mount(relay_role.DATA_DIR, str(data), type="bind")]
        containers.append(run_service(client, spec, mounts))

        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=5).status_code == 200, START_WITHIN_S,
                 "the relay in its container to answer /healthz")
        accepted = requests.post(f"{url}/alertmanager", json=notification("ContainerProbe"), timeout=10,
                                 headers={"Authorization": f"Bearer {secrets['alertmanager_webhook_token']}"})
        assert accepted.status_code == 200
        wait_for(lambda: slack.calls_of("chat.postMessage"), START_WITHIN_S, "the alert to reach (fake) Slack")
        assert (data / Path(relay_role.QUEUE_PATH).name).exists(), "the queue lives in the host's data folder"
        wait_for(lambda: health(containers[0]) == "healthy", HEALTHY_WITHIN_S, "the relay healthcheck to pass")
    finally:
        slack.close()
