"""toy-redis on its lab hosts: serving clients over the lab network, sandboxed, logging, idempotent."""

import json
import runpy
import time

import pytest
import redis

from homelab.config import model_from_data
from homelab.vault import load_vault
from roles.python_app import NO_HOME, build_wheels
from roles.toy_redis import APP, DATA_DIR, LOG_DIR, LOG_FILE, LOG_LINK, REQUIREPASS_PATH, Settings
from roles.tuning.settings import load_tuning
from tests.conftest import REPO, hosts_in, run_pyinfra, wheel_target
from tests.hosts.python_app_checks import check_runs_as_its_own_user, check_sandboxed, main_pid
from tests.roles.test_prometheus import LAB_TOPOLOGY

pytestmark = pytest.mark.lab

TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")
GROUP_DATA = runpy.run_path(str(REPO / "inventory" / "group_data" / "toy_redis.py"))["toy_redis"]
# Group data holds only what differs from the role's defaults.
SETTINGS = model_from_data("inventory/group_data/toy_redis.py", Settings, GROUP_DATA)
PORT = SETTINGS.port
METRICS_PORT = SETTINGS.metrics_port


@pytest.fixture(scope="module")
def password() -> str:
    return load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")["toy_redis_password"]


@pytest.fixture(params=hosts_in("toy_redis"))
def node(request, deployed, testinfra_hosts):
    return testinfra_hosts[request.param]


@pytest.fixture
def client(node, password):
    client = LAB_TOPOLOGY.access("toy_redis", node.backend.hostname, "resp").redis(password=password, socket_timeout=5)
    yield client
    client.close()


def test_service_enabled_and_running_as_its_own_user(node):
    check_runs_as_its_own_user(node, APP)


def test_sandboxed_with_the_tuned_file_limit(node):
    check_sandboxed(node, APP, {DATA_DIR, LOG_DIR}, TUNING.limits.nofile)


def test_set_and_get_from_the_control_machine_with_the_vault_password(node, client):
    key = f"lab-test:{time.time_ns()}"
    assert client.set(key, "hello", ex=60)
    assert client.get(key) == b"hello"
    anonymous = LAB_TOPOLOGY.access("toy_redis", node.backend.hostname, "resp").redis(socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get(key)
    anonymous.close()


def test_password_file_readable_only_by_root_and_the_service(node, password):
    secret = node.file(REQUIREPASS_PATH)
    assert (secret.user, secret.group, secret.mode) == ("root", APP.service, 0o640)
    # Never on a command line.
    assert password not in node.check_output("ps -eo args")


def test_metrics_served_to_prometheus(node, client):
    client.set(f"lab-test:metrics:{time.time_ns()}", "1", ex=60)
    text = LAB_TOPOLOGY.access("toy_redis", node.backend.hostname, "metrics").get("/metrics").text
    assert 'toy_redis_commands_total{command="set"}' in text
    assert "toy_redis_command_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text


def test_json_log_written_and_reopened_after_logrotate(node):
    log = node.file(LOG_FILE)
    assert (log.user, log.group, log.mode) == (APP.service, "adm", 0o640)
    assert node.file(LOG_LINK).linked_to == LOG_FILE
    first = json.loads(log.content_string.splitlines()[0])
    assert {"ts", "level", "event"} <= set(first)

    pid = main_pid(node, APP)
    node.check_output("logrotate --force /etc/logrotate.d/toy-redis")
    assert main_pid(node, APP) == pid  # SIGHUP reopened the log; it did not restart the server
    assert node.file(f"{LOG_FILE}.1").exists
    # The server writes to the new file: logrotate created it inside the sandbox's writable folder.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = node.file(LOG_FILE)
        if fresh.exists and "log_reopened" in fresh.content_string:
            break
        time.sleep(0.5)
    events = [json.loads(line)["event"] for line in node.file(LOG_FILE).content_string.splitlines()]
    assert "log_reopened" in events
    fresh = node.file(LOG_FILE)
    assert (fresh.user, fresh.group, fresh.mode) == (APP.service, "adm", 0o640)


def test_runs_the_wheels_built_on_the_control_machine(node):
    expected = build_wheels(APP.source_dir, wheel_target(node)).digest
    assert node.check_output(f"readlink {APP.current}") == f"venvs/{expected}"
    assert node.check_output(f"ls {APP.home}/venvs") == expected  # older venvs removed


def test_second_deploy_changes_nothing(node):
    rerun = run_pyinfra("deploys/all.py", "--limit", node.backend.hostname, "--data", "only_roles=toy_redis")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert rerun.failed() == []
    assert rerun.changed() == [], f"a second run changed: {rerun.changed()}"


def test_a_stray_home_left_by_earlier_tls_deploys_goes_when_empty_and_the_services(node):
    """Deploys with pki.tls on before 7a08784 made NO_HOME, owned to a service user: the deploy
    removes it once it is empty (and then changes nothing), never while it holds anything."""

    def deploy():
        run = run_pyinfra("deploys/all.py", "--limit", node.backend.hostname, "--data", "only_roles=toy_redis")
        assert run.returncode == 0 and run.failed() == [], run.stderr[-4000:]
        return run

    try:
        node.check_output(f"mkdir -p {NO_HOME}/left-by-someone && chown -R {APP.service}: {NO_HOME}")
        deploy()
        assert node.file(f"{NO_HOME}/left-by-someone").is_directory
        node.check_output(f"rmdir {NO_HOME}/left-by-someone")
        deploy()
        assert not node.file(NO_HOME).exists
        assert deploy().changed() == []
    finally:
        node.run(f"rm -rf {NO_HOME}")


def test_a_config_change_restarts_the_server_with_it_and_keeps_the_data(node, client):
    key = f"lab-test:restart:{time.time_ns()}"
    client.set(key, "kept")  # the AOF must carry it across the restart
    pid = main_pid(node, APP)
    changed = {**GROUP_DATA, "slowlog_max_len": GROUP_DATA.get("slowlog_max_len", 128) + 1}
    try:
        run = run_pyinfra("deploys/all.py", "--limit", node.backend.hostname, "--data", "only_roles=toy_redis",
                          "--data", f"toy_redis={json.dumps(changed)}")
        assert run.returncode == 0 and run.failed() == [], run.stderr[-4000:]
        assert f"slowlog_max_len: {changed['slowlog_max_len']}" in node.file("/etc/toy-redis/toy-redis.yaml").content_string
        assert main_pid(node, APP) != pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not node.socket(f"tcp://0.0.0.0:{PORT}").is_listening:
            time.sleep(0.2)
        assert client.get(key) == b"kept"
    finally:
        restored = run_pyinfra("deploys/all.py", "--limit", node.backend.hostname, "--data", "only_roles=toy_redis")
    assert restored.returncode == 0 and restored.failed() == [], restored.stderr[-4000:]
