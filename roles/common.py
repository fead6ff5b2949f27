"""What every role shares: settings from host data, local template rendering, checked config swaps.

Configs are rendered on the control machine (so tests can render them without a host), compared
with the live file by checksum, and only when they differ are they uploaded to a staged path,
checked with the service's own checker, and moved into place. A config that fails its check never
replaces the live one, and the failed operation stops the deploy for that host.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from pydantic import BaseModel
from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.context import ctx_inventory
from pyinfra.facts import server as server_facts
from pyinfra.facts.files import File, Sha1File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, python, systemd
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError, settings_from_data
from homelab.releases import SUPPORTED, DebianRelease, UnsupportedRelease, debian_release
from homelab.topology import Topology
from roles import fact_cache

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def role_settings(role: str, model: type[SettingsT], data: Any = None) -> SettingsT:
    """This host's settings for ``role``: its model's defaults overridden by host data ``role``.

    Group data (inventory/group_data/*.py) sets e.g. ``prometheus = {"retention": "30d"}``.
    """
    return settings_from_data(host.name, role, model, host.data.get(role) if data is None else data)


def current_topology() -> Topology:
    """The topology of the inventory this deploy runs against (built once per run)."""
    return _topology_of(ctx_inventory.get())


@cache
def _topology_of(current) -> Topology:
    return Topology(current)


class OsRelease(server_facts.OsRelease):
    """pyinfra's /etc/os-release fact, empty instead of failed where the file is missing. One cat:
    pyinfra's LinuxDistribution runs ls, grep and a cat per *-release file, ~2 ms of each node's CPU
    at every deploy."""

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || true"


def node_release() -> DebianRelease:
    """The Debian release the host runs (its /etc/os-release), which roles adapt to."""
    release = host.get_fact(OsRelease) or {}
    identity, version = release.get("id", ""), release.get("version_id", "")
    try:
        if identity != "debian" or not version.isdigit():
            raise UnsupportedRelease
        return debian_release(int(version))
    except UnsupportedRelease:
        raise ConfigError(f"inventory data for {host.name}", "",
                          f"runs {release.get('pretty_name') or 'an unknown system'}; expected Debian {SUPPORTED}") from None


@cache
def _jinja_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the render, not the service
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **context: Any) -> str:
    """Render templates/<template> with ``context``; any template error names the template."""
    try:
        return _jinja_env().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f"line {line}" if line else ""
        raise ConfigError(f"templates/{template}", where, f"template error: {exc.message}") from None


def sha1(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha1(data).hexdigest()


@operation()
def checked_file(
    dest: str,
    content: str | bytes,
    check: str | None = None,
    user: str = "root",
    group: str = "root",
    mode: str = "0644",
):
    """Ensure ``dest`` holds ``content``; when it must change, ``check`` the staged file first.

    + dest: the live path the service reads
    + content: the wanted file content, rendered on the control machine
    + check: shell command run against the staged copy, ``{staged}`` replaced by its path; the swap
      only happens if it exits 0, otherwise the operation fails with the checker's output
    """
    data = content.encode() if isinstance(content, str) else content
    staged = f"{dest}.staged"
    fact_cache.want(File, path=staged)  # asked below after the hash: read with it
    if host.get_fact(Sha1File, path=dest) == sha1(data):
        yield from files.file._inner(path=dest, user=user, group=group, mode=mode)
        # A staged copy left by a run whose check failed is stale once the live file is right.
        yield from files.file._inner(path=staged, present=False)
        return
    yield from files.put._inner(src=BytesIO(data), dest=staged, user=user, group=group, mode=mode)
    if check:
        yield check.format(staged=shlex.quote(staged))
    yield f"mv -f {shlex.quote(staged)} {shlex.quote(dest)}"


# A restart's silence ends by itself after this long even if the deploy cannot lift it (Alertmanager
# itself restarting, the run killed): systemd's default stop and start timeouts, 90 s each, and room.
RESTART_SILENCE_S = 300
# A deploy does not wait on an Alertmanager that is down or not installed yet (a first deploy).
RESTART_SILENCE_TIMEOUT_S = 3
# How long lifting the silence waits for an Alertmanager that is starting up.
RESTART_LIFT_WAIT_S = 15


def _unit(service: str) -> str:
    return service if "." in service else f"{service}.service"


# A restart, and a start through `running`, clear the unit's start-rate count first. A unit that
# crash-looped meanwhile has used it up (Restart=on-failure, RestartSec=2: about four starts in
# systemd's default 10 s window of five), and one or two more from the deploy make systemd refuse
# them ("start request repeated too quickly"; systemctl says "the control process exited with error
# code", the last run's result) although the code in place now would start. That is how the relay and
# toy-redis failed after an upgrade to Debian 13: their venvs, made for Python 3.11, crash-looped from
# the reboot until the deploy installed new ones and started them.
@operation(is_idempotent=False)
def restarted(service: str):
    """Restart ``service``, or start it if it is down, with its start-rate count cleared.

    + service: the systemd unit (".service" is implied)
    """
    yield f"systemctl reset-failed {_unit(service)}"
    yield f"systemctl restart {_unit(service)}"


@operation()
def started(service: str):
    """``service`` running: started, with its start-rate count cleared, if it is not.

    + service: the systemd unit (".service" is implied)
    """
    unit = _unit(service)
    if host.get_fact(SystemdStatus, services=[unit]).get(unit):
        host.noop(f"service {unit} is running")
        return
    yield f"systemctl reset-failed {unit}"
    yield f"systemctl start {unit}"


def running(service: str, role: str, name: str, restart_when: Callable[[], bool]) -> None:
    """Enabled; restarted when ``restart_when()`` (as ``restart`` does); else started if it is down.

    The one place a service running our code starts: called after its code, unit and config are in
    place, so whatever asks for a restart (new wheels, config, certificate), no start runs code the
    deploy is about to replace, and a service crash-looping on old code starts once, on the new.
    """
    # running=None: enabled only (pyinfra would start it here by default, before a restart that may follow).
    systemd.service(name=f"{service} enabled", service=service, running=None, enabled=True)
    restart(service, role, name, restart_when)
    started(name=f"{service} running", service=service)


def restart(service: str, role: str, name: str, when: Callable[[], bool],
            listeners: tuple[str, ...] | None = None) -> None:
    """Restart ``service`` (start it if it is down) when ``when()`` is true, with the alerts about
    ``role``'s ``listeners`` (default: all) on this host silenced in Alertmanager from just before
    until just after.

    A run that does not restart creates no silence (all three operations are skipped). Alertmanager
    unreachable or refusing is one warning line, never a failed deploy.
    """
    from homelab.maintenance import restart_matchers

    topology = current_topology()
    matchers = restart_matchers(topology, host.name, role, listeners) if topology.hosts_of("alertmanager") else ()
    if not matchers:  # nothing that could alert on it, or no Alertmanager to tell
        restarted(name=name, service=service, _if=when)
        return
    silence: dict[str, str] = {}
    python.call(name=f"Silence {service}'s alerts on {host.name} during its restart", function=_silence,
                topology=topology, matchers=matchers, service=service, silence=silence, _if=when)
    restarted(name=name, service=service, _if=when)
    python.call(name=f"Lift the silence of {service}'s alerts on {host.name}", function=_lift_silence,
                topology=topology, service=service, silence=silence, _if=when)


def _silence(topology: Topology, matchers: tuple, service: str, silence: dict[str, str]) -> None:
    from homelab.maintenance import CommandError, alertmanager, operator

    ends = datetime.now(timezone.utc) + timedelta(seconds=RESTART_SILENCE_S)
    try:
        silence["id"] = alertmanager(topology, RESTART_SILENCE_TIMEOUT_S).create(
            matchers, ends, operator(), f"restart of {service} on {host.name} by a deploy")
    except CommandError as exc:
        logger.warning(f"[{host.name}] {service} restarts without a silence: {exc}")


def _lift_silence(topology: Topology, service: str, silence: dict[str, str]) -> None:
    from homelab.maintenance import CommandError, alertmanager

    if "id" not in silence:
        return
    manager = alertmanager(topology, RESTART_SILENCE_TIMEOUT_S)
    # Alertmanager's own restart (or a node's) may leave it a few seconds from answering.
    deadline = time.monotonic() + RESTART_LIFT_WAIT_S
    while True:
        try:
            manager.expire(silence["id"])
            return
        except CommandError as exc:
            if time.monotonic() >= deadline:
                logger.warning(f"[{host.name}] the silence of {service}'s restart ends by itself within "
                               f"{RESTART_SILENCE_S // 60} min: {exc}")
                return
            time.sleep(1)


def keep_running(service: str, role: str, restart_on: tuple = (), reload_on: tuple = ()) -> None:
    """Enable and start ``service`` (of ``role``); restart it when an operation in ``restart_on``
    changed something (what it reads only at start: flags), else reload it when one in
    ``reload_on`` did (what it rereads on SIGHUP: config, rules), which keeps its in-memory state."""
    systemd.service(name=f"{service} enabled and running", service=service, running=True, enabled=True)
    if restart_on:
        restart(service, role, f"Restart {service} for new flags", any_changed(*restart_on))
    if reload_on:
        restarted, reloaded = any_changed(*restart_on), any_changed(*reload_on)
        systemd.service(name=f"Reload {service} for its new config", service=service, reloaded=True,
                        _if=lambda: reloaded() and not restarted())
