"""The project's own Python services on nodes: wheels built here, a venv there, a hardened unit.

Nodes have no PyPI, so the control machine makes the wheel set for each node's Python and CPU: the
service's own wheel (pure Python, `pip wheel --no-deps`) and every dependency's binary wheel for
that CPython, CPU and glibc (`pip download --only-binary=:all:` with the node's tags), once per source
state and target, cached under build/wheels/. The node's Python is the one of its Debian release
(homelab.releases), so a Debian 12 node gets cp311 wheels and a Debian 13 node cp313 ones from the
same control machine. A target with no binary wheel of a dependency is refused in one line.

They are uploaded and installed into a fresh venv on the node with `pip install --no-index`. Each
wheel set gets its own venv, /opt/<service>/venvs/<digest>, and /opt/<service>/current points at
the live one: a failed install never touches the running service, and a rerun with the same wheels
changes nothing.

Dependencies are resolved when the cache entry is built, i.e. when the service's source changes;
delete build/wheels/ to pick up newer dependency releases without a source change.

A dependency named after a distribution under src/ (pprof-sampler and service-kit, which toy-redis and the relay
share) is built from there like the service's own wheel and is part of its source state; PyPI is
never asked for it (a package of that name there could otherwise be installed in its place).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from io import BytesIO
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch, Command
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError
from homelab.releases import DebianRelease
from roles.common import REPO_ROOT, checked_file, node_release
from roles.common import running as service_running
from roles.install import Install, install_packages

WHEEL_CACHE = REPO_ROOT / "build" / "wheels"
# Never part of a build's input: build output and the editable install's metadata.
_NOT_SOURCE = {"build", "dist", "__pycache__", ".pytest_cache"}
# Fixed zip timestamps make a rebuild of unchanged source byte-identical (same digest, no reinstall).
_SOURCE_DATE_EPOCH = "315532800"
# In a venv on a node: the manifest of the wheel set it was installed from, written last.
INSTALLED_MARKER = "homelab-wheels.manifest"
# In a wheel cache folder: written once pip has built every wheel.
BUILT_MARKER = ".complete"
# Oldest manylinux tag accepted (PEP 600 names; manylinux2014 is 2.17): older wheels are rare.
_OLDEST_MANYLINUX_MINOR = 17


@dataclass(frozen=True)
class WheelTarget:
    """What a node's wheels must fit: its CPython version, CPU and glibc."""

    python: str  # "3.13"
    machine: str  # uname -m: "x86_64", "aarch64"
    glibc: tuple[int, int]

    @classmethod
    def for_release(cls, release: DebianRelease, machine: str) -> "WheelTarget":
        return cls(release.python, machine, release.glibc)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        """pip's --platform tags this node accepts, newest first (pip does not expand PEP 600 tags)."""
        major, newest = self.glibc
        tags = [f"manylinux_{major}_{minor}_{self.machine}" for minor in range(newest, _OLDEST_MANYLINUX_MINOR - 1, -1)]
        return tags + [f"manylinux2014_{self.machine}"]

    def __str__(self) -> str:
        return f"CPython {self.python} on {self.machine} (glibc {self.glibc[0]}.{self.glibc[1]})"


@dataclass(frozen=True)
class PythonApp:
    """One of our services: its source distribution and the names it has on a node."""

    # Folder under src/ holding the distribution's pyproject.toml, e.g. "toy_redis"
    source: str
    # Distribution name pip installs, e.g. "toy-redis"
    distribution: str
    # systemd unit, system user and group, and the folder under /opt
    service: str

    @property
    def source_dir(self) -> Path:
        return REPO_ROOT / "src" / self.source

    @property
    def home(self) -> str:
        return f"/opt/{self.service}"

    @property
    def current(self) -> str:
        """The live venv (a symlink to one of venvs/<digest>)."""
        return f"{self.home}/current"

    def binary(self, name: str | None = None) -> str:
        return f"{self.current}/bin/{name or self.service}"

    @property
    def venv_fits_python(self) -> str:
        """The unit's ExecCondition: exit 1 when the live venv was made for another Python than the
        node's. After an upgrade of Debian the old venv cannot import the service; skipping its start
        (not a failure) spares a crash loop until the deploy installs a venv for the new Python."""
        return (f"{self.binary('python')} -c \"import os, sys, sysconfig; "
                f"sys.exit(not os.path.isdir(sysconfig.get_path('purelib')))\"")

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.service}.service"


@dataclass(frozen=True)
class WheelSet:
    """The wheels a service installs from: its own and all its dependencies', for one target."""

    folder: Path
    target: WheelTarget
    wheels: tuple[Path, ...]

    @property
    def manifest(self) -> str:
        """One line per wheel: file name and sha256; what the node records for the installed set."""
        return "".join(f"{wheel.name} {_file_sha256(wheel)}\n" for wheel in self.wheels)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.manifest.encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_files(source_dir: Path) -> list[Path]:
    found = []
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if any(part in _NOT_SOURCE or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            found.append(path)
    return found


def source_digest(source_dir: Path, target: WheelTarget) -> str:
    """Hash of the distribution's source files, those of the src/ distributions it depends on, and
    the target the wheels are for."""
    digest = hashlib.sha256(f"{target}\n".encode())
    for folder in (source_dir, *local_dependencies(source_dir)):
        digest.update(f"{folder.name}/\n".encode())
        for path in _source_files(folder):
            digest.update(f"{path.relative_to(folder)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirements(source_dir: Path) -> list[str]:
    try:
        project = tomllib.loads((source_dir / "pyproject.toml").read_text()).get("project", {})
    except tomllib.TOMLDecodeError:
        return []  # pip's build names what is wrong with it
    return list(project.get("dependencies", []))


def _requirement_name(requirement: str) -> str:
    return _canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def _local_distributions() -> dict[str, Path]:
    """The distributions under src/, by canonical name."""
    found = {}
    for pyproject in sorted((REPO_ROOT / "src").glob("*/pyproject.toml")):
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
        if name:
            found[_canonical(name)] = pyproject.parent
    return found


def local_dependencies(source_dir: Path) -> list[Path]:
    """The src/ distributions ``source_dir`` requires, directly or through one another."""
    local, found, pending = _local_distributions(), [], [Path(source_dir)]
    while pending:
        for requirement in _requirements(pending.pop()):
            folder = local.get(_requirement_name(requirement))
            if folder is not None and folder not in found and folder != Path(source_dir):
                found.append(folder)
                pending.append(folder)
    return found


def _third_party_requirements(folders: list[Path]) -> list[str]:
    """The requirements of ``folders``' distributions that PyPI serves (not the src/ ones)."""
    local = _local_distributions()
    return sorted({requirement for folder in folders for requirement in _requirements(folder)
                   if _requirement_name(requirement) not in local})


def _pip(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH},
    )


def _last_error(result: subprocess.CompletedProcess) -> str:
    errors = [line.strip() for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    return errors[-1] if errors else f"exit status {result.returncode}"


@cache
def build_wheels(source_dir: Path, target: WheelTarget) -> WheelSet:
    """Wheels for the distribution in ``source_dir`` and its dependencies, for ``target``; built once
    per source state and target.

    The build runs on a clean copy of the source, so neither stale build/ output nor the editable
    install's metadata in the tree leaks into the wheel.
    """
    source_dir = Path(source_dir)
    where = _shown(source_dir)
    if not (source_dir / "pyproject.toml").is_file():
        raise ConfigError(where, "", "expected a Python distribution (pyproject.toml) to build wheels from")
    folder = WHEEL_CACHE / f"{source_dir.name}-{target.abi}-{target.machine}-{source_digest(source_dir, target)}"
    if not (folder / BUILT_MARKER).is_file():
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=WHEEL_CACHE, prefix=".building-") as scratch:
            ours = [source_dir, *local_dependencies(source_dir)]
            out = Path(scratch) / "wheels"
            out.mkdir()
            for distribution in ours:
                _build_own_wheel(distribution, Path(scratch), out)
            requirements = _third_party_requirements(ours)
            tags = [f"--platform={platform}" for platform in target.platforms()]
            result = _pip(["download", "--only-binary=:all:", f"--python-version={target.python}",
                           "--implementation=cp", f"--abi={target.abi}", "--abi=abi3", "--abi=none",
                           *tags, "--dest", str(out), *requirements]) if requirements else None
            if result is not None and result.returncode != 0:
                raise ConfigError(where, "", f"no wheels for {target}: {_last_error(result)}")
            (out / BUILT_MARKER).write_text(f"for {target}\n")
            shutil.rmtree(folder, ignore_errors=True)
            try:
                out.rename(folder)
            except OSError:
                # Another deploy run built the same source meanwhile; its wheels are identical.
                if not (folder / BUILT_MARKER).is_file():
                    raise
    return WheelSet(folder, target, tuple(sorted(folder.glob("*.whl"))))


def _shown(source_dir: Path) -> Path:
    return source_dir.relative_to(REPO_ROOT) if source_dir.is_relative_to(REPO_ROOT) else source_dir


def _build_own_wheel(source_dir: Path, scratch: Path, out: Path) -> None:
    """The pure-Python wheel of one of our distributions, built from a clean copy of its source, into ``out``."""
    where = _shown(source_dir)
    copy = scratch / "src" / source_dir.name
    for path in _source_files(source_dir):
        target_path = copy / path.relative_to(source_dir)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target_path)
    own = scratch / "own" / source_dir.name
    result = _pip(["wheel", "--no-deps", "--wheel-dir", str(own), str(copy)])
    if result.returncode != 0:
        raise ConfigError(where, "", f"building wheels with pip failed: {_last_error(result)}")
    [own_wheel] = own.glob("*.whl")
    if not own_wheel.name.endswith("-py3-none-any.whl"):
        raise ConfigError(where, "", f"expected a pure-Python wheel, got {own_wheel.name}")
    shutil.copy2(own_wheel, out / own_wheel.name)


def install_script(app: PythonApp, wheel_set: WheelSet) -> str:
    """Shell run on the node: a new venv from the uploaded wheels, then switch `current` to it."""
    wheels = f"{app.home}/wheels/{wheel_set.digest}"
    venv = f"{app.home}/venvs/{wheel_set.digest}"
    target = wheel_set.target
    return " && ".join([
        "set -e",
        # The wheels fit the Python of the node's Debian release: a node whose python3 is another one
        # (changed since the facts were read) would make pip fail with a less helpful message.
        f"case \"$(python3 --version)\" in 'Python {target.python}.'*) ;; *) echo \"{app.service}: wheels were built "
        f"for Python {target.python}, this node has $(python3 --version)\" >&2; exit 1;; esac",
        f"case \"$(uname -m)\" in '{target.machine}') ;; *) echo \"{app.service}: wheels were built for "
        f"{target.machine}, this node is $(uname -m)\" >&2; exit 1;; esac",
        f"rm -rf {venv}",
        f"python3 -m venv {venv}",
        f"{venv}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --no-index "
        f"--find-links {wheels} {shlex.quote(app.distribution)}",
        f"cp {wheels}/{INSTALLED_MARKER} {venv}/{INSTALLED_MARKER}",
        # Atomic switch: the unit's ExecStart goes through `current`.
        f"ln -sfn venvs/{wheel_set.digest} {app.current}.new",
        f"mv -T {app.current}.new {app.current}",
        f"rm -rf {wheels}",
    ])


def installed_digest_command(app: PythonApp) -> str:
    """Prints the digest of the live wheel set, or nothing if no complete install is live."""
    return (f"test -f {app.current}/{INSTALLED_MARKER} && basename \"$(readlink {app.current})\" || true")


@operation()
def wheels_installed(app: PythonApp, wheel_set: WheelSet):
    """Ensure the node's live venv for ``app`` was installed from exactly ``wheel_set``.

    + app: the service
    + wheel_set: wheels built on the control machine (build_wheels)
    """
    if (host.get_fact(Command, installed_digest_command(app)) or "").strip() == wheel_set.digest:
        return
    wheels = f"{app.home}/wheels/{wheel_set.digest}"
    yield from files.directory._inner(path=wheels, mode="0755")
    for wheel in wheel_set.wheels:
        yield from files.put._inner(src=str(wheel), dest=f"{wheels}/{wheel.name}", mode="0644")
    yield from files.put._inner(src=BytesIO(wheel_set.manifest.encode()), dest=f"{wheels}/{INSTALLED_MARKER}",
                                mode="0644")
    yield install_script(app, wheel_set)


# The service users' home: Debian's name for a home that must not exist.
NO_HOME = "/nonexistent"


def service_account(app: PythonApp) -> None:
    """The service's own system user and group: no login, no home.

    Deploys with pki.tls on before 7a08784 made NO_HOME (pyinfra's server.user ensured the home):
    where it is still there, empty and the service's, it goes. One holding anything, or someone
    else's, is left alone for its owner to look at."""
    server.group(name=f"{app.service} group", group=app.service, system=True)
    server.user(
        name=f"{app.service} user", user=app.service, group=app.service, system=True,
        shell="/usr/sbin/nologin", home=NO_HOME, create_home=False, ensure_home=False,
    )
    # One command: the directory (not a link), its owner, and whether anything is in it.
    stray = host.get_fact(Command, f"test -d {NO_HOME} -a ! -L {NO_HOME} && stat -c %U {NO_HOME} "
                                   f"&& ls -A {NO_HOME} | head -c 1; true")
    if stray and stray.splitlines() == [app.service]:
        files.directory(name=f"No stray {NO_HOME} (empty, left by a deploy with pki.tls on)", path=NO_HOME,
                        present=False)


def node_target() -> WheelTarget:
    """The wheel target of the host being deployed: its release's Python, its CPU."""
    return WheelTarget.for_release(node_release(), host.get_fact(Arch))


def install(app: PythonApp) -> OperationMeta:
    """Python and venv support from Debian, then the app's wheels into a fresh venv when they changed."""
    wheel_set = build_wheels(app.source_dir, node_target())
    install_packages("python", ["python3", "python3-venv"], Install())
    files.directory(name=f"{app.home} folder", path=app.home, mode="0755")
    return wheels_installed(name=f"{app.service} wheels ({wheel_set.digest})", app=app, wheel_set=wheel_set)


def unit_check_command(app: PythonApp) -> str:
    """`systemd-analyze verify` on a staged unit (it insists on the unit's real file name)."""
    return (
        "scratch=$(mktemp -d) && "
        f"cp {{staged}} \"$scratch\"/{app.service}.service && "
        f"systemd-analyze verify \"$scratch\"/{app.service}.service; "
        "status=$?; rm -rf \"$scratch\"; exit $status"
    )


def unit_values(app: PythonApp, config_path: str, data_dir: str, nofile: int) -> dict[str, str | int]:
    """What each service's unit template fills in: user, binary, config, file limit, state folder."""
    return {"user": app.service, "binary": app.binary(), "venv_fits_python": app.venv_fits_python,
            "config_path": config_path, "nofile": nofile,
            "data_dir": data_dir, "state_dir_name": data_dir.removeprefix("/var/lib/")}


def unit(app: PythonApp, content: str) -> OperationMeta:
    """The service's systemd unit, verified before it is swapped in; systemd re-reads it on change."""
    changed = checked_file(
        name=f"{app.service} systemd unit",
        dest=app.unit_path,
        content=content,
        check=unit_check_command(app),
    )
    systemd.daemon_reload(name=f"systemd reads the {app.service} unit", _if=changed.did_change)
    return changed


def restart_name(app: PythonApp) -> str:
    return f"Restart {app.service} for new wheels, unit, config or data it reads at start"


def running(app: PythonApp, role: str, restart_when_changed: list[OperationMeta], installed: OperationMeta) -> None:
    """Enabled and running from the venv ``installed`` made current; restarted when its wheels, unit,
    config or other files it reads at start changed (neither service reloads). Called last in the
    role: roles.common.running is the only place it starts, so nothing starts it before its venv fits
    the node's Python."""
    service_running(app.service, role, restart_name(app), any_changed(installed, *restart_when_changed))
    # Only now is no process running from the old venvs.
    server.shell(
        name=f"Remove {app.service}'s previous venvs",
        commands=[f"cd {app.home}/venvs && for venv in *; do [ \"$venv\" = \"$(basename \"$(readlink {app.current})\")\" ] "
                  "|| rm -rf \"$venv\"; done"],
        _if=installed.did_change,
    )
