"""roles/container_runtime: the unit that runs a service's container, as systemd and sh will read it.

Runs here without a node: the unit is rendered on the control machine, verified with
systemd-analyze, and its command line is expanded by sh with stand-ins for `docker` and `id`
(the node's service user and Docker exist only on nodes). The container lab test
(docs/containers.md) runs it for real.
"""

from __future__ import annotations

import json
import resource
import shlex
import shutil
import subprocess

import pytest

from homelab.config import ConfigError
from homelab.containers.runtime import RUNTIMES, check_runtime
from homelab.vault import load_vault
from roles import alert_relay, container_runtime, toy_redis
from roles.python_app import PythonApp, unit_check_command

# The tuning file's open-file limit as the roles pass it; below this machine's hard limit, so a
# test can run `docker run` under a hard limit on either side of it (lowering needs no privilege).
NOFILE = 4096
needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")


def containers() -> dict:
    return {"toy-redis": toy_redis.container(toy_redis.Settings(), NOFILE),
            "alert-relay": alert_relay.container(alert_relay.Settings(), NOFILE)}


def exec_start(unit: str, key: str = "ExecStart") -> str:
    [line] = [line for line in unit.splitlines() if line.startswith(f"{key}=")]
    return line.removeprefix(f"{key}=")


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """A `docker` that prints its arguments as JSON, and an `id` that knows the service users."""
    docker = tmp_path / "docker"
    docker.write_text("#!/usr/bin/python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake_id = tmp_path / "id"
    fake_id.write_text('#!/bin/sh\ncase "$1" in -u) echo 4242;; -g) echo 4343;; esac\n')
    for script in (docker, fake_id):
        script.chmod(0o755)
    monkeypatch.setattr(container_runtime, "DOCKER", str(docker))
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return docker


def under_hard_nofile(hard: int | None):
    """For subprocess's preexec_fn: the child runs with this hard open-file limit (None: as is)."""
    def lower() -> None:
        if hard is not None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    return lower


def argv_as_run(unit: str, hard_nofile: int | None = None) -> list[str]:
    """The arguments `docker run` gets: systemd turns $$ into $ and splits the line, sh expands it
    (under ``hard_nofile``, the hard limit the unit would run under)."""
    argv = shlex.split(exec_start(unit).replace("$$", "$"))
    assert argv[:2] == ["/bin/sh", "-c"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, preexec_fn=under_hard_nofile(hard_nofile))
    return json.loads(result.stdout)


@pytest.mark.parametrize("service", ["toy-redis", "alert-relay"])
def test_the_container_runs_as_the_hosts_service_user_on_the_host_network(stand_ins, service):
    container = containers()[service]
    argv = argv_as_run(container_runtime.render_unit(container))
    assert argv[0] == "run" and argv[-1] == container.image
    assert "--user" in argv and argv[argv.index("--user") + 1] == "4242:4343"
    assert {f"--name={service}", "--network=host", "--read-only", "--rm", "--cap-drop=ALL",
            "--memory=512m", "--cpus=1"} <= set(argv)


@pytest.mark.parametrize("hard, expected", [(NOFILE + 1, NOFILE), (NOFILE, NOFILE), (NOFILE - 1, NOFILE - 1)])
def test_the_open_file_limit_is_the_tuning_files_or_the_closest_docker_may_set(stand_ins, hard, expected):
    """runc cannot raise a container's hard limit above its own without CAP_SYS_RESOURCE (the start
    fails: "error setting rlimit type 7"), so a node held below the tuning file's limit gives its own."""
    for container in containers().values():
        for argv in (argv_as_run(container_runtime.render_unit(container), hard),
                     check_argv(container, hard_nofile=hard)):
            assert [arg for arg in argv if arg.startswith("--ulimit")] == [f"--ulimit=nofile={expected}:{expected}"]


def test_the_unit_is_started_once_the_container_runs_and_fails_if_docker_run_ends(tmp_path, monkeypatch):
    """ExecStartPost, run as systemd would ($MAINPID is `docker run`), against a `docker` whose
    container runs from its third inspection on."""
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\necho >> {tmp_path}/inspections\n"
                      f'[ "$(wc -l < {tmp_path}/inspections)" -ge 3 ] && echo true || echo false\n')
    docker.chmod(0o755)
    monkeypatch.setattr(container_runtime, "DOCKER", str(docker))
    argv = shlex.split(exec_start(container_runtime.render_unit(containers()["toy-redis"]), "ExecStartPost").replace("$$", "$"))
    with subprocess.Popen(["sleep", "60"]) as docker_run:
        waited = subprocess.run(argv, env={"MAINPID": str(docker_run.pid)}, capture_output=True, timeout=30)
        docker_run.kill()
    assert waited.returncode == 0 and (tmp_path / "inspections").read_text().count("\n") == 3
    # `docker run` gone before its container ran: the start fails instead of waiting for ever.
    (tmp_path / "inspections").write_text("")
    ended = subprocess.run(argv, env={"MAINPID": str(docker_run.pid)}, capture_output=True, timeout=30)
    assert ended.returncode == 1


def test_config_is_mounted_read_only_and_data_and_logs_writable(stand_ins):
    argv = argv_as_run(container_runtime.render_unit(containers()["toy-redis"]))
    mounts = [arg.removeprefix("--mount=") for arg in argv if arg.startswith("--mount=")]
    assert mounts == [f"type=bind,src={toy_redis.CONFIG_DIR},dst={toy_redis.CONFIG_DIR},readonly",
                      f"type=bind,src={toy_redis.DATA_DIR},dst={toy_redis.DATA_DIR}",
                      f"type=bind,src={toy_redis.LOG_DIR},dst={toy_redis.LOG_DIR}"]


def test_secrets_reach_the_container_only_as_files(stand_ins):
    vault = load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")
    for container in containers().values():
        unit = container_runtime.render_unit(container)
        argv = argv_as_run(unit)
        assert not [arg for arg in argv if arg in ("-e", "--env", "--env-file") or arg.startswith("--env")]
        for value in vault.values():
            assert str(value) not in unit
    # The role's secret files are where the read-only mount is.
    assert toy_redis.REQUIREPASS_PATH.startswith(toy_redis.CONFIG_DIR + "/")
    assert all(alert_relay.token_path(secret).startswith(alert_relay.CONFIG_DIR + "/")
               for secret in alert_relay.TOKEN_FILES.values())


def check_argv(container, staged: str = "config.staged", hard_nofile: int | None = None) -> list[str]:
    """The arguments `docker run` gets for a config check, as roles.common.checked_file runs it."""
    check = container_runtime.check_command(container, "--check-config {staged}")
    result = subprocess.run(["sh", "-c", check.format(staged=shlex.quote(staged))], capture_output=True, text=True,
                            check=True, preexec_fn=under_hard_nofile(hard_nofile))
    return json.loads(result.stdout)


def test_a_config_check_runs_the_image_without_network_or_name(stand_ins, tmp_path):
    container = containers()["toy-redis"]
    staged = f"{toy_redis.CONFIG_PATH}.staged"
    argv = check_argv(container, staged)
    assert "--network=none" in argv and not any(arg.startswith("--name") for arg in argv)
    # The staged file sits in the mounted config folder, so the image's binary sees it.
    assert argv[-3:] == [container.image, "--check-config", staged]
    assert staged.startswith(toy_redis.CONFIG_DIR + "/")


@needs_systemd_analyze
@pytest.mark.parametrize("service", ["toy-redis", "alert-relay"])
def test_container_units_pass_systemd_analyze_verify(tmp_path, service):
    staged = tmp_path / f"{service}.service.staged"
    staged.write_text(container_runtime.render_unit(containers()[service]))
    check = unit_check_command(PythonApp(source="x", distribution="x", service=service))
    result = subprocess.run(["sh", "-c", check.format(staged=staged)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "docker" not in result.stderr


def test_runtime_is_one_of_two_with_a_clear_error():
    assert RUNTIMES == ("systemd", "container")
    with pytest.raises(ValueError) as refused:
        check_runtime("docker")
    assert str(refused.value) == "expected one of systemd, container, got 'docker'"


def test_a_dataset_larger_than_the_container_is_refused_in_one_line():
    mib = container_runtime.MIB
    fits = toy_redis.Settings(maxmemory=256 * mib, container={"memory_mib": 256 + toy_redis.CONTAINER_OVERHEAD_MIB})
    toy_redis.check_dataset_fits_the_container(fits, "here")
    too_big = toy_redis.Settings(maxmemory=256 * mib + 1, container=fits.container)
    with pytest.raises(ConfigError) as refused:
        toy_redis.check_dataset_fits_the_container(too_big, "inventory data for n")
    assert str(refused.value) == (
        f"inventory data for n: toy_redis.container.memory_mib: expected at least {256 + 1 + 128} (maxmemory "
        f"{256 * mib + 1} bytes plus 128 MiB for the server), got {256 + 128}")



def test_every_supported_release_knows_its_docker_packages():
    from homelab.releases import RELEASES
    from roles.docker import PACKAGES

    assert set(PACKAGES) == {release.codename for release in RELEASES.values()}
    assert all("docker.io" in packages for packages in PACKAGES.values())
