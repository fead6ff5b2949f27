"""alert-relay (src/alert_relay) next to Alertmanager: alerts and faxes to Slack, nothing lost.

Installed like toy-redis (roles.python_app: wheels from the control machine, a venv, a hardened
unit run as its own user). Its config comes from group data `alert_relay`; its routes are
alerts/routes.yaml, validated here first and uploaded as is. The four tokens come from the vault
as files readable only by root and the service's group. The queue lives in /var/lib/alert-relay.
The routes and the config are checked with the node's own `alert-relay --check-routes` and
`--check-config` before they replace the live ones; a change to either, to a token, the unit or
the wheels restarts the relay.

On a host whose data says `runtime = "container"` the relay runs from its image instead
(roles/container_runtime): same unit name, config, token files, queue folder and port; the routes
and config are checked by the image's own binary.

Alertmanager (roles/alertmanager) sends to http://<this host>:<listen port>/alertmanager with the
bearer token alertmanager_webhook_token. With pki.tls on, the relay serves TLS with the node's
certificate and asks GET /metrics and /healthz for a caller's login, from the web config roles/pki
writes (roles.pki.web.web_config_file); Alertmanager then uses https with the cluster CA.
"""

from __future__ import annotations

import re
from typing import Literal

import yaml
from pydantic import field_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import files

from alert_relay import store
from alert_relay.config import SPARE_FILE_DESCRIPTORS, RelayTuning

from homelab.config import ConfigError
from homelab.types import check_host_port
from roles import container_runtime, python_app
from roles.common import REPO_ROOT, checked_file, render, role_settings
from roles.tuning import host_tuning

APP = python_app.PythonApp(source="alert_relay", distribution="alert-relay", service="alert-relay")
CONFIG_DIR = "/etc/alert-relay"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
ROUTES_PATH = f"{CONFIG_DIR}/routes.yaml"
DATA_DIR = "/var/lib/alert-relay"
QUEUE_PATH = f"{DATA_DIR}/queue.sqlite3"
# The queue and SQLite's companions beside it, the relay's user's alone: the relay refuses to start
# on a queue it cannot write. The backup's part restores them with these (homelab.backup.parts).
QUEUE_FILES = (QUEUE_PATH, f"{QUEUE_PATH}-wal", f"{QUEUE_PATH}-shm")
QUEUE_OWNER = f"{APP.service}:{APP.service}"
QUEUE_MODE = f"{store.QUEUE_MODE:04o}"
# Root-owned, readable by the service's group only: the relay refuses token files others can read.
TOKEN_MODE = "0640"
# config key -> vault secret written to CONFIG_DIR/<secret>
TOKEN_FILES = {
    "slack_token_file": "slack_bot_token",
    "faxplus_token_file": "faxplus_token",
    "alertmanager_token_file": "alertmanager_webhook_token",
    "fax_webhook_token_file": "fax_webhook_token",
}


class Settings(RelayTuning):
    """Group data key `alert_relay`: the relay's own settings (alert_relay.config.RelayTuning: keys,
    defaults and bounds), the routes file to ship, and stricter checks where a deploy needs them."""

    # Repo-relative; its `slack:` section routes alerts and faxes to channels.
    routes: str = "alerts/routes.yaml"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # With runtime container: Docker's limits.
    container: container_runtime.ContainerLimits = container_runtime.ContainerLimits()

    # Same names as the relay's validators, so these replace them: port 0 (tests' "any free
    # port") and URLs with spaces are the relay's to accept, not a deployment's.
    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("slack_base_url", "faxplus_base_url", "alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://\S+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value



def token_path(secret: str) -> str:
    return f"{CONFIG_DIR}/{secret}"


def config_values(settings: Settings, routes_file: str = ROUTES_PATH, web_config_file: str | None = None) -> dict:
    """The relay's config: the tuning from group data, plus the paths this role owns; with pki.tls,
    the web config roles/pki writes (TLS with the node's certificate, the callers' logins)."""
    tuning = settings.model_dump(include=set(RelayTuning.model_fields), exclude_none=True)
    paths = {"routes_file": routes_file, "queue_path": QUEUE_PATH,
             **{key: token_path(secret) for key, secret in TOKEN_FILES.items()},
             **({"web_config_file": web_config_file} if web_config_file else {})}
    return {**paths, **tuning}


def render_config(settings: Settings, routes_file: str = ROUTES_PATH, web_config_file: str | None = None) -> str:
    config_yaml = yaml.safe_dump(config_values(settings, routes_file, web_config_file), sort_keys=False).rstrip("\n")
    return render("alert_relay/config.yaml.j2", config_yaml=config_yaml)


def render_unit(nofile: int) -> str:
    return render("alert_relay/alert-relay.service.j2", **python_app.unit_values(APP, CONFIG_PATH, DATA_DIR, nofile))


def container(settings: Settings, nofile: int, tls: bool = False) -> container_runtime.Container:
    """With ``tls``, the node's TLS folder is mounted too, and the service reads its key as a member of its group."""
    from homelab.containers.images import spec_named
    from roles.pki import GROUP, TLS_DIR

    tls_mounts = (container_runtime.BindMount(TLS_DIR, readonly=True),) if tls else ()
    return container_runtime.Container(
        app=APP, image=spec_named(APP.service).tag, description="alert-relay: alerts and faxes to Slack",
        mounts=(container_runtime.BindMount(CONFIG_DIR, readonly=True), container_runtime.BindMount(DATA_DIR),
                *tls_mounts),
        limits=settings.container, nofile=nofile, groups=(GROUP,) if tls else (),
    )


def read_routes(settings: Settings) -> str:
    """The routes file's text, once the relay's own loader accepts it (one-line error otherwise)."""
    from alert_relay.config import ConfigFileError
    from alert_relay.routes import load_routes

    path = REPO_ROOT / settings.routes
    try:
        load_routes(path)
    except ConfigFileError as exc:
        raise ConfigError(settings.routes, exc.key, exc.expected) from None
    return path.read_text()


def check_open_file_limit(settings: Settings, nofile: int) -> None:
    """max_connections must fit the unit's LimitNOFILE (the relay would refuse to start)."""
    if settings.max_connections + SPARE_FILE_DESCRIPTORS > nofile:
        raise ConfigError("inventory/group_data/alert_relay.py", "alert_relay.max_connections",
                          f"expected at most {nofile - SPARE_FILE_DESCRIPTORS} (limits.nofile {nofile} in the tuning "
                          f"file, less {SPARE_FILE_DESCRIPTORS} for the queue and Slack), got {settings.max_connections}")


def queue_repaired() -> list[OperationMeta]:
    """The queue files that exist back to QUEUE_OWNER and QUEUE_MODE (a restore cut short left them
    root's once, and the relay crash-looped through every later deploy). None is created: the relay
    makes its queue itself. The relay checks its queue at start only, so a repair restarts it (with
    systemd's own restart of a crash-looping relay, whether the role's start or systemd's came first
    would depend on timing)."""
    user, group = QUEUE_OWNER.split(":")
    return [
        files.file(name=f"{path}: owner and mode", path=path, user=user, group=group, mode=QUEUE_MODE, touch=False)
        for path in QUEUE_FILES
        if host.get_fact(File, path=path)  # None: absent; False: something else than a file
    ]


def routes_check_command(boxed: container_runtime.Container | None = None) -> str:
    if boxed:
        return container_runtime.check_command(boxed, "--check-routes {staged}")
    return f"{APP.binary()} --check-routes {{staged}}"


def config_check_command(boxed: container_runtime.Container | None = None) -> str:
    """Checks the config with the routes and token files it names (so those go first)."""
    if boxed:
        return container_runtime.check_command(boxed, "--check-config {staged}")
    return f"{APP.binary()} --check-config {{staged}}"


@deploy("alert-relay")
def apply() -> None:
    from roles.pki.web import check_profiles_behind_a_login, web_config_file
    from roles.secrets import secret_file

    settings = role_settings("alert_relay", Settings)
    routes = read_routes(settings)
    nofile = host_tuning().limits.nofile
    check_open_file_limit(settings, nofile)
    check_profiles_behind_a_login("alert_relay", settings.profiling_hz)

    runtime = container_runtime.host_runtime()
    # Both runtimes run as this user: it owns the queue and may read the token files.
    python_app.service_account(APP)
    # With pki.tls: TLS and logins on its port (the relay's user joins roles.pki.GROUP to read the key).
    web = web_config_file("alert_relay", APP.service)
    boxed = container(settings, nofile, tls=web is not None) if runtime == "container" else None
    installed = container_runtime.image_ready(APP) if boxed else python_app.install(APP)

    files.directory(name=f"{CONFIG_DIR} folder", path=CONFIG_DIR, user="root", group=APP.service, mode="0750")
    # systemd would create it at start, but the config check before that wants the queue's folder.
    files.directory(name=f"{DATA_DIR} folder", path=DATA_DIR, user=APP.service, group=APP.service, mode="0750")
    queue = queue_repaired()
    tokens = [
        secret_file(name=f"alert-relay token {secret}", dest=token_path(secret), secret=secret,
                    user="root", group=APP.service, mode=TOKEN_MODE)
        for secret in TOKEN_FILES.values()
    ]
    routes_changed = checked_file(
        name=f"alert-relay routes (from {settings.routes})",
        dest=ROUTES_PATH,
        content=routes,
        check=routes_check_command(boxed),
        group=APP.service,
        mode="0640",
    )
    config = checked_file(
        name="alert-relay config",
        dest=CONFIG_PATH,
        content=render_config(settings, web_config_file=web.path if web else None),
        check=config_check_command(boxed),
        group=APP.service,
        mode="0640",
    )
    unit = python_app.unit(APP, container_runtime.render_unit(boxed) if boxed else render_unit(nofile))
    # The relay reads its queue, web config and certificate at start only.
    changes = [*queue, *tokens, routes_changed, config, unit, *(web.changes if web else ())]
    if boxed:
        container_runtime.running(boxed, "alert_relay", [installed, *changes])
    else:
        python_app.running(APP, "alert_relay", restart_when_changed=changes, installed=installed)
