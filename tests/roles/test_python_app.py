"""Our services' wheels: built once per source state, complete, and installed offline into a venv."""

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from roles import python_app
from roles.alert_relay import render_unit as render_relay_unit
from homelab.releases import RELEASES
from roles.python_app import (PythonApp, WheelTarget, build_wheels, install_script, installed_digest_command,
                              unit_check_command)
from roles.toy_redis import render_unit as render_toy_redis_unit
from roles import alert_relay, toy_redis
from tests.roles.test_grafana import plans_on_this_machine

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
MACHINE = platform.machine()
# The control machine's own Python as a node target: what the offline-install tests can run here.
HERE = WheelTarget(f"{sys.version_info.major}.{sys.version_info.minor}", MACHINE,
                   tuple(int(part) for part in platform.libc_ver()[1].split(".")[:2]))

needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(metadata).decode())
    return [Requirement(text) for text in message.get_all("Requires-Dist") or []]


def assert_complete(wheel_set: python_app.WheelSet, distribution: str) -> None:
    names = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheel_set.wheels}
    assert canonicalize_name(distribution) in names
    for wheel in wheel_set.wheels:
        for requirement in wheel_requirements(wheel):
            # Requirements behind extras or for other platforms are not installed on the node.
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            assert name in names, f"{wheel.name} needs {requirement}, missing from the wheel set"
            version = parse_wheel_filename(names[name].name)[1]
            assert requirement.specifier.contains(version, prereleases=True), f"{names[name].name} does not satisfy {requirement}"


@pytest.mark.slow
@pytest.mark.parametrize("release", sorted(RELEASES), ids=lambda version: f"debian{version}")
@pytest.mark.parametrize("source, distribution, expected", [
    # pprof-sampler and service-kit are built from src/, with their own dependencies (protobuf, bcrypt)
    # from PyPI.
    ("toy_redis", "toy-redis", {"prometheus-client", "pyyaml", "hiredis", "uvloop", "bcrypt", "py-spy",
                                "pprof-sampler", "protobuf", "service-kit"}),
    ("alert_relay", "alert-relay", {"slack-sdk", "prometheus-client", "pyyaml", "pydantic", "pydantic-core", "h11",
                                    "py-spy", "pprof-sampler", "protobuf", "service-kit", "bcrypt"}),
])
def test_wheel_set_holds_the_service_and_all_its_dependencies_for_the_nodes_python(source, distribution, expected,
                                                                                     release):
    # Built on this control machine whatever its own Python: the target is the node's release.
    target = WheelTarget.for_release(RELEASES[release], MACHINE)
    wheel_set = build_wheels(REPO / "src" / source, target)
    names = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheel_set.wheels}
    assert expected <= names
    assert_complete(wheel_set, distribution)
    # pip takes manylinux2014 to cover the older manylinux2010 and manylinux1 (glibc 2.12, 2.5) too.
    older = {f"manylinux_2_{minor}_{MACHINE}" for minor in range(5, 17)} | {f"manylinux1_{MACHINE}",
                                                                            f"manylinux2010_{MACHINE}"}
    allowed = set(target.platforms()) | older | {"any"}
    for wheel in wheel_set.wheels:
        tags = parse_wheel_filename(wheel.name)[3]
        # Binary wheels are for exactly that CPython (or its stable ABI, as bcrypt's) and a manylinux
        # glibc the release has.
        assert any((t.interpreter in (target.abi, "py3") or t.abi == "abi3") and t.platform in allowed
                   for t in tags), wheel.name
    # Extension modules are for that CPython or its stable ABI; py-spy's wheel holds a program, no module.
    binary = [w.name for w in wheel_set.wheels if not w.name.endswith("-none-any.whl")
              and not w.name.startswith("py_spy-")]
    assert binary and all(f"-{target.abi}-" in name or "-abi3-" in name for name in binary)


def test_a_python_without_wheels_is_refused_in_one_line(tmp_path, wheel_cache):
    # No hiredis or uvloop wheels exist for a CPython from the future.
    future = WheelTarget("3.99", MACHINE, RELEASES[13].glibc)
    with pytest.raises(python_app.ConfigError) as failure:
        build_wheels(REPO / "src" / "toy_redis", future)
    message = str(failure.value)
    assert message.startswith(f"src/toy_redis: no wheels for CPython 3.99 on {MACHINE} (glibc ")
    assert "No matching distribution" in message and "\n" not in message
    assert not list(wheel_cache.glob("toy_redis-*"))


def make_distribution(root: Path, version: str = "1.0") -> Path:
    source = root / "demo_app"
    (source / "demo_app").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "demo-app"\nversion = "{version}"\n'
        '[project.scripts]\ndemo-app = "demo_app:main"\n'
        '[tool.setuptools.packages.find]\ninclude = ["demo_app"]\n'
    )
    (source / "demo_app" / "__init__.py").write_text(f"def main():\n    print('demo {version}')\n")
    return source


@pytest.fixture
def wheel_cache(tmp_path, monkeypatch):
    cache = tmp_path / "wheel-cache"
    monkeypatch.setattr(python_app, "WHEEL_CACHE", cache)
    build_wheels.cache_clear()
    yield cache
    build_wheels.cache_clear()


@pytest.mark.slow
def test_unchanged_source_gives_the_same_wheel_set_and_a_change_a_new_one(tmp_path, wheel_cache):
    source = make_distribution(tmp_path)
    first = build_wheels(source, HERE)
    # Rebuilt from scratch (cache gone, files touched): byte-identical wheels, so no reinstall on nodes.
    shutil.rmtree(wheel_cache)
    build_wheels.cache_clear()
    (source / "demo_app" / "__init__.py").touch()
    again = build_wheels(source, HERE)
    assert again.digest == first.digest
    # Editable-install metadata and build output in the tree are not part of the source.
    (source / "demo_app.egg-info").mkdir()
    (source / "demo_app.egg-info" / "PKG-INFO").write_text("stale")
    (source / "build" / "lib" / "demo_app").mkdir(parents=True)
    (source / "build" / "lib" / "demo_app" / "old.py").write_text("stale = True\n")
    build_wheels.cache_clear()
    assert build_wheels(source, HERE).digest == first.digest
    (source / "demo_app" / "__init__.py").write_text("def main():\n    print('changed')\n")
    build_wheels.cache_clear()
    assert build_wheels(source, HERE).digest != first.digest


def test_a_failing_build_names_the_source_in_one_line(tmp_path, wheel_cache):
    source = make_distribution(tmp_path)
    (source / "pyproject.toml").write_text("[project]\nname = \n")
    with pytest.raises(python_app.ConfigError) as failure:
        build_wheels(source, HERE)
    message = str(failure.value)
    assert message.startswith(f"{source}: building wheels with pip failed: ")
    assert "\n" not in message
    assert not list(wheel_cache.glob("demo_app-*"))


def run_on_fake_node(script: str, opt: Path, path_dirs: str) -> subprocess.CompletedProcess:
    # The script's absolute /opt paths, redirected into the test's folder.
    return subprocess.run(["sh", "-c", script.replace("/opt/", f"{opt}/")], capture_output=True, text=True,
                          env={"PATH": path_dirs, "HOME": str(opt)}, timeout=300)


def upload(wheel_set: python_app.WheelSet, app: PythonApp, opt: Path) -> None:
    """What wheels_installed uploads before it runs the install script."""
    folder = opt / app.home.removeprefix("/opt/") / "wheels" / wheel_set.digest
    folder.mkdir(parents=True)
    for wheel in wheel_set.wheels:
        shutil.copy(wheel, folder)
    (folder / python_app.INSTALLED_MARKER).write_text(wheel_set.manifest)


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="needs Debian's python3 with venv support, as on nodes")
def test_install_script_installs_offline_and_switches_only_when_complete(tmp_path, wheel_cache):
    app = PythonApp(source="demo_app", distribution="demo-app", service="demo-app")
    opt = tmp_path / "opt"
    first = build_wheels(make_distribution(tmp_path / "v1", "1.0"), HERE)
    upload(first, app, opt)
    result = run_on_fake_node(install_script(app, first), opt, "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    current = opt / "demo-app" / "current"
    assert subprocess.run([current / "bin" / "demo-app"], capture_output=True, text=True).stdout == "demo 1.0\n"
    digest = run_on_fake_node(installed_digest_command(app), opt, "/usr/bin:/bin").stdout.strip()
    assert digest == first.digest  # what the next run compares: same wheels, nothing to do
    assert not (opt / "demo-app" / "wheels" / first.digest).exists()

    # A failed install (here: a wheel missing) leaves the live venv in place.
    build_wheels.cache_clear()
    second = build_wheels(make_distribution(tmp_path / "v2", "2.0"), HERE)
    upload(second, app, opt)
    for wheel in (opt / "demo-app" / "wheels" / second.digest).glob("*.whl"):
        wheel.unlink()
    result = run_on_fake_node(install_script(app, second), opt, "/usr/bin:/bin")
    assert result.returncode != 0
    assert os.readlink(current) == f"venvs/{first.digest}"

    shutil.rmtree(opt / "demo-app" / "wheels" / second.digest)
    upload(second, app, opt)
    result = run_on_fake_node(install_script(app, second), opt, "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert subprocess.run([current / "bin" / "demo-app"], capture_output=True, text=True).stdout == "demo 2.0\n"
    assert run_on_fake_node(installed_digest_command(app), opt, "/usr/bin:/bin").stdout.strip() == second.digest


def test_install_script_refuses_a_node_with_another_python(tmp_path):
    app = PythonApp(source="demo_app", distribution="demo-app", service="demo-app")
    wheel_set = python_app.WheelSet(tmp_path, HERE, ())
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\necho 'Python 3.9.2'\n")
    (fake_bin / "python3").chmod(0o755)
    result = run_on_fake_node(install_script(app, wheel_set), tmp_path / "opt", f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode != 0
    assert result.stderr.strip() == f"demo-app: wheels were built for Python {HERE.python}, this node has Python 3.9.2"
    assert not (tmp_path / "opt" / "demo-app" / "venvs").exists()


def test_install_script_refuses_a_node_with_another_cpu(tmp_path):
    app = PythonApp(source="demo_app", distribution="demo-app", service="demo-app")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "uname").write_text("#!/bin/sh\necho 'riscv64'\n")
    (fake_bin / "uname").chmod(0o755)
    result = run_on_fake_node(install_script(app, python_app.WheelSet(tmp_path, HERE, ())), tmp_path / "opt",
                              f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode != 0
    assert result.stderr.strip() == f"demo-app: wheels were built for {MACHINE}, this node is riscv64"
    assert not (tmp_path / "opt" / "demo-app" / "venvs").exists()


HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure"]


def unit_directives(unit: str) -> dict[str, str]:
    directives = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives[key] = value
    return directives


@pytest.mark.parametrize("render_unit, service, writable", [
    (render_toy_redis_unit, "toy-redis", {"/var/lib/toy-redis", "/var/log/toy-redis"}),
    (render_relay_unit, "alert-relay", {"/var/lib/alert-relay"}),
])
def test_units_are_hardened_and_run_as_the_service_user(render_unit, service, writable):
    unit = render_unit(12345)
    directives = unit_directives(unit)
    for line in HARDENING:
        assert line in unit.splitlines(), line
    assert directives["User"] == service and directives["Group"] == service
    assert directives["LimitNOFILE"] == "12345"
    assert set(directives["ReadWritePaths"].split()) == writable
    assert directives["ExecStart"].startswith(f"/opt/{service}/current/bin/{service} ")


@needs_systemd_analyze
@pytest.mark.parametrize("render_unit, service", [(render_toy_redis_unit, "toy-redis"), (render_relay_unit, "alert-relay")])
def test_units_pass_systemd_analyze_verify_without_warnings(tmp_path, render_unit, service):
    # The venv exists only on nodes; verify insists that ExecStart's and ExecCondition's binaries do.
    unit = (render_unit(65536).replace(f"/opt/{service}/current/bin/{service}", "/bin/true")
            .replace(f"/opt/{service}/current/bin/python", sys.executable))
    staged = tmp_path / f"{service}.service.staged"
    staged.write_text(unit)
    check = unit_check_command(PythonApp(source="x", distribution="x", service=service))
    result = subprocess.run(["sh", "-c", check.format(staged=staged)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("render_unit, service", [(render_toy_redis_unit, "toy-redis"), (render_relay_unit, "alert-relay")])
def test_a_venv_made_for_another_python_skips_the_start_instead_of_crash_looping(tmp_path, render_unit, service):
    # What Debian 12 -> 13 does to a live venv: its lib/python3.11 stays, the interpreter becomes 3.13.
    venv = tmp_path / "current"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    condition = shlex.split(unit_directives(render_unit(65536))["ExecCondition"].replace(f"/opt/{service}/current", str(venv)))
    assert subprocess.run(condition).returncode == 0
    own = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (venv / "lib" / own).rename(venv / "lib" / "python3.0")
    # systemd skips the unit on 1-254 and counts it as no failure (systemd.service(5), ExecCondition=).
    assert subprocess.run(condition).returncode == 1


@needs_systemd_analyze
def test_unit_check_refuses_a_unit_whose_binary_is_missing(tmp_path):
    staged = tmp_path / "toy-redis.service.staged"
    staged.write_text(render_toy_redis_unit(65536))
    check = unit_check_command(PythonApp(source="x", distribution="x", service="toy-redis"))
    result = subprocess.run(["sh", "-c", check.format(staged=staged)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "/opt/toy-redis/current/bin/toy-redis" in result.stderr


@pytest.mark.parametrize("os_release, shown", [
    ('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\nVERSION_ID="11"\nID=debian\n',
     "Debian GNU/Linux 11 (bullseye)"),
    ('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n',
     "Ubuntu 24.04.1 LTS"),
    # testing and sid name no VERSION_ID
    ('PRETTY_NAME="Debian GNU/Linux forky/sid"\nNAME="Debian GNU/Linux"\nID=debian\n', "Debian GNU/Linux forky/sid"),
    (None, "an unknown system"),
])
def test_a_node_on_an_unsupported_system_is_refused_in_one_line(monkeypatch, tmp_path, os_release, shown):
    import roles.common

    path = tmp_path / "os-release"
    if os_release is not None:
        path.write_text(os_release)
    # The fact's own command, run by sh on that file as the node's shell runs it.
    command = roles.common.OsRelease().command().replace("/etc/os-release", str(path))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines()

    class OldNode:
        name = "old-node"

        def get_fact(self, fact):
            assert fact is roles.common.OsRelease
            return fact().process(output)

    monkeypatch.setattr(roles.common, "host", OldNode())
    with pytest.raises(python_app.ConfigError) as failure:
        roles.common.node_release()
    assert str(failure.value) == f"inventory data for old-node: runs {shown}; expected Debian 12 (bookworm), 13 (trixie)"


def test_a_debian_node_gets_its_release_from_os_release(monkeypatch, tmp_path):
    import roles.common

    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\nVERSION_CODENAME=trixie\nID=debian\n')
    command = roles.common.OsRelease().command().replace("/etc/os-release", str(path))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines()

    class Node:
        name = "new-node"

        def get_fact(self, fact):
            return fact().process(output)

    monkeypatch.setattr(roles.common, "host", Node())
    assert roles.common.node_release().codename == "trixie"


# Plans the roles on @local and writes every operation, in the order they run, with its commands.
# systemd cannot answer here (PID 1 is not systemd): its facts stand in for it with every unit down
# and disabled, as a new node shows them, or a node whose service crash-loops on a stale venv.
ORDER_DEPLOY = """
from importlib import import_module
import json
from pyinfra import host, state
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

real_get_fact = host.get_fact
host.get_fact = lambda fact, *args, **kwargs: ({} if fact in (SystemdEnabled, SystemdStatus)
                                               else real_get_fact(fact, *args, **kwargs))
for role in host.data.get("roles").split(","):
    import_module(f"roles.{role}").apply()
plan = [{"names": sorted(state.op_meta[op_hash].names),
         "commands": [str(command) for command in state.ops[host][op_hash].command_generator()]}
        for op_hash in state.get_op_order()]
with open(host.data.get("plan_file"), "w") as out:
    json.dump(plan, out)
"""


def planned_operations(tmp_path: Path, roles: str) -> list[dict]:
    """What `pyinfra --dry` plans for ``roles`` on @local, in order: each operation's names and commands."""
    vault = {"vault_file": "secrets/lab.vault.yml", "vault_password_file": "secrets/lab.vault-password"}
    (tmp_path / "inventory.py").write_text(
        f"_local = ('@local', {vault!r})\n" + "".join(f"{group} = [_local]\n" for group in roles.split(",")))
    (tmp_path / "deploy.py").write_text(ORDER_DEPLOY)
    plan_file = tmp_path / "plan.json"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "--dry", "--data", f"roles={roles}",
         "--data", f"plan_file={plan_file}", str(tmp_path / "inventory.py"), str(tmp_path / "deploy.py")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return json.loads(plan_file.read_text())


@plans_on_this_machine
def test_a_service_starts_only_from_its_current_venv_and_past_systemds_start_limit(tmp_path):
    """After an upgrade to Debian 13 the relay and toy-redis crash-loop on venvs made for the old
    Python until the deploy installs new ones: then a start or restart must run the new venv, and
    must not be refused because the loop used up systemd's start limit (the lab upgrade test failed so)."""
    plan = planned_operations(tmp_path, "toy_redis,alert_relay")
    for app in (toy_redis.APP, alert_relay.APP):
        [wheels] = [at for at, op in enumerate(plan) if any(name.startswith(f"{app.service} | {app.service} wheels")
                                                            for name in op["names"])]
        starting = [(at, op) for at, op in enumerate(plan)
                    if any(re.fullmatch(rf"systemctl (start|restart) {app.service}(\.service)?", command)
                           for command in op["commands"])]
        assert starting, f"nothing starts {app.service}"
        for at, op in starting:
            assert at > wheels, f"{op['names']} starts {app.service} before its wheels are installed"
            commands = op["commands"]
            first_start = next(i for i, command in enumerate(commands) if command.split()[:2] in (
                ["systemctl", "start"], ["systemctl", "restart"]))
            assert f"systemctl reset-failed {app.service}.service" in commands[:first_start], \
                f"{op['names']} does not clear the start limit first: {commands}"
