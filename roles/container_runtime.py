"""Our services in containers, on hosts whose data says `runtime = "container"`.

The service's image (homelab.containers.images: the same wheels, the node's paths) is built on
the control machine when its inputs change (homelab.containers.tarballs), copied to the node as a
`docker save` tarball and loaded there only when the node's image id differs: no registry.

The container runs as the host's service user (its uid and gid, looked up on the node) with host
networking, so it listens on the ports the topology names and Prometheus, Alertmanager and the
healthy-lab checks find it where the package install was. Its config folder, which holds the
vault's secret files, is bind-mounted read-only: a secret is never in the image, the environment
or a command line. The data folder (and log folder) are the host's, the same ones the package
install uses, so removing the container or switching the runtime either way keeps the data.

Supervision: a systemd unit named like the package install's (toy-redis.service) runs `docker run`
in the foreground, rather than Docker's restart policy. That is what systemd-based tools do
(podman's Quadlet, CoreOS/Flatcar's units) and it keeps one supervisor and one name for both
runtimes: `systemctl` and the deploy's restart logic, logrotate's HUP (`docker run` passes signals
on), start ordering after docker.service, and the unit's journal (the container's output, with
Docker keeping no log copy of its own) all work unchanged, and switching runtime is replacing
one unit file. A container removed by hand (`docker rm -f`) makes `docker run` exit with 137,
and systemd starts a fresh one from the same image and host folders. The container's processes
live in Docker's cgroups, not the unit's, so the limits are Docker's flags (memory, CPUs, open
files), from the role's settings and the tuning file.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pydantic import Field
from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import files
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError, StrictModel
from homelab.containers.runtime import DEFAULT_RUNTIME, KEY, Runtime, check_runtime
from roles.common import render
from roles.common import running as service_running
from roles.python_app import PythonApp

DOCKER = "/usr/bin/docker"
# Tarballs wait here between upload and `docker load`, then are removed.
REMOTE_IMAGE_DIR = "/var/cache/homelab-ops/images"
# The image's root file system is read-only; Python and the services may still want a /tmp.
TMPFS = "/tmp:rw,noexec,nosuid,size=64m,mode=1777"
MIB = 1024 * 1024


class ContainerLimits(StrictModel):
    """Group data `<role>.container`: what the container may use (Docker enforces it)."""

    memory_mib: int = Field(512, ge=64, le=1024 * 1024)
    cpus: float = Field(1.0, gt=0, le=1024)


@dataclass(frozen=True)
class BindMount:
    """A host folder seen at the same path inside the container."""

    path: str
    readonly: bool = False

    def flag(self) -> str:
        return f"type=bind,src={self.path},dst={self.path}" + (",readonly" if self.readonly else "")


@dataclass(frozen=True)
class Container:
    """One service's container: its app (names, paths), image tag, host folders and limits."""

    app: PythonApp
    image: str
    description: str
    mounts: tuple[BindMount, ...]
    limits: ContainerLimits
    nofile: int
    # Host groups the service user is also in inside (e.g. roles.pki.GROUP, to read the node's TLS key).
    groups: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.app.service


def host_runtime() -> Runtime:
    """This host's runtime for our services (host or group data `runtime`), validated."""
    try:
        return check_runtime(host.data.get(KEY, DEFAULT_RUNTIME))
    except ValueError as exc:
        raise ConfigError(f"inventory data for {host.name}", KEY, str(exc)) from None


def user_flag(app: PythonApp) -> str:
    """`--user` with the host's service user's ids, found on the node when the command runs: the
    image has a user of the same name, but its ids need not match the host's, and the host's
    own the data and may read the secrets."""
    return f'--user "$(id -u {app.service}):$(id -g {app.service})"'


def nofile_flag(nofile: int) -> str:
    """`--ulimit nofile` with the tuning file's limit, or the hard limit `docker` runs under when that
    is lower, worked out by sh on the node.

    runc sets the limit on the container's first process from outside, and may set it above its
    own hard limit only with CAP_SYS_RESOURCE; otherwise the start fails ("error setting rlimit
    type 7: operation not permitted"). Lab nodes on this machine cannot have that capability (the
    machine itself lacks it) and are held at its hard limit of 20000. The package install's unit gets
    the same treatment from systemd, which sets the closest limit it may (setrlimit_closest).
    """
    closest = f'n=$(ulimit -Hn); [ "$n" -le {nofile} ] 2>/dev/null || n={nofile}; echo "$n:$n"'
    return f'"--ulimit=nofile=$({closest})"'


def run_flags(container: Container) -> list[str]:
    """`docker run` flags shared by the service and its config checks: who, limits, host folders."""
    limits = container.limits
    flags = [
        "--rm", user_flag(container.app), "--read-only", f"--tmpfs={TMPFS}",
        "--cap-drop=ALL", "--security-opt=no-new-privileges",
        f"--memory={limits.memory_mib}m", f"--memory-swap={limits.memory_mib}m", f"--cpus={limits.cpus:g}",
        nofile_flag(container.nofile),
    ]
    # --user sets no supplementary groups: each is added by its id on the node.
    groups = [f'--group-add "$(getent group {group} | cut -d: -f3)"' for group in container.groups]
    return flags + groups + [f"--mount={mount.flag()}" for mount in container.mounts]


def run_command(container: Container) -> str:
    """The service's `docker run`, as sh runs it (it looks up the user's ids)."""
    return " ".join([
        DOCKER, "run", f"--name={container.name}", "--network=host",
        # The unit's journal gets the output through `docker run`; no second copy in Docker.
        "--log-driver=none",
        *run_flags(container), container.image,
    ])


def check_command(container: Container, arguments: str) -> str:
    """A config check in a throwaway container of the image (the node has no venv to check with),
    with the same user and folders as the service; ``arguments`` may hold checked_file's {staged}."""
    return " ".join([DOCKER, "run", "--network=none", *run_flags(container), container.image, arguments])


def started_command(container: Container) -> str:
    """sh that waits until the container runs, failing if `docker run` ($MAINPID) ends first."""
    running = f'{DOCKER} container inspect --format "{{{{.State.Running}}}}" {container.name} 2>/dev/null'
    return f'until [ "$({running})" = true ]; do kill -0 "$MAINPID" 2>/dev/null || exit 1; sleep 0.2; done'


def as_unit_command(script: str) -> str:
    # systemd expands $ itself; $$ passes one to sh.
    return "/bin/sh -c " + shlex.quote(script).replace("$", "$$")


def render_unit(container: Container) -> str:
    return render("container_runtime/container.service.j2", description=container.description,
                  name=container.name, image=container.image, docker=DOCKER,
                  exec_start=as_unit_command("exec " + run_command(container)),
                  exec_start_post=as_unit_command(started_command(container)))


def image_id_command(tag: str) -> str:
    return f"{DOCKER} image inspect --format '{{{{.Id}}}}' {shlex.quote(tag)} 2>/dev/null || echo absent"


@operation()
def image_loaded(tarball):
    """Ensure the node's Docker has ``tarball``'s image under its tag: loaded only when the id differs.

    + tarball: homelab.containers.tarballs.ImageTarball
    """
    if (host.get_fact(Command, image_id_command(tarball.spec.tag)) or "").strip() == tarball.image_id:
        return
    remote = f"{REMOTE_IMAGE_DIR}/{tarball.path.name}"
    yield from files.directory._inner(path=REMOTE_IMAGE_DIR, mode="0700")
    yield from files.put._inner(src=str(tarball.path), dest=remote, mode="0600")
    # The image it replaces is kept while a container still runs it; pruned on the next load.
    yield (f"{DOCKER} load --quiet --input {remote} && rm -f {remote} "
           f"&& {DOCKER} image prune --force >/dev/null")


def image_ready(app: PythonApp) -> OperationMeta:
    """Docker on the node, and the app's image loaded into it."""
    from homelab.containers.tarballs import ensure_tarball
    from roles import docker

    docker.apply()
    tarball = ensure_tarball(app.service)
    return image_loaded(name=f"{app.service} image ({tarball.image_id.removeprefix('sha256:')[:12]})",
                        tarball=tarball)


def running(container: Container, role: str, restart_when_changed: list[OperationMeta]) -> None:
    """Enabled and running; restarted (a fresh container, its alerts silenced meanwhile, as
    roles.common.restart does) when its image, unit or config changed. Started once per deploy
    (roles.common.running): a stop while Docker still creates the container (seconds on a lab
    node's vfs storage) leaves its name taken, and the next start fails with "Conflict"."""
    service = container.app.service
    service_running(service, role, f"Restart {service} for a new image, unit or config", any_changed(*restart_when_changed))
