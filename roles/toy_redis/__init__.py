"""toy-redis, the project's Redis-protocol server (src/toy_redis), on the toy_redis group.

Installed from wheels built on the control machine into a venv (roles.python_app), run by a
hardened systemd unit as its own user. Its config file is rendered from group data `toy_redis` and
checked with the node's own `toy-redis --check-config` before it replaces the live one. A changed
config, unit or wheel set restarts the server (it reloads nothing; SIGHUP only reopens its log).

Logs go to /var/log/toy-redis/toy-redis.log, rotated by logrotate, with /var/log/toy-redis.log
linking to it: the sandbox may only write inside its own log folder, and logrotate's new file must
appear inside that folder for the reopened log to be writable.

With pki.tls on, RESP is served over TLS on `port` (plain only on `plain_port`, if set) with the node's certificate
from roles/pki, and the metrics over https asking for the logins of the web config roles/pki
writes; a new login restarts the server (it reads them at start), a new certificate does not (the
server loads it for new connections when its files change).

On a host whose data says `runtime = "container"` the server runs from its image instead
(roles/container_runtime): same unit name, config, password file, data and log folders and ports;
the config is checked by the image's own binary.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files
from toy_redis.config import METRICS_MAX_CONNECTIONS, Tuning

from homelab.config import ConfigError, FieldError
from homelab.types import Port
from roles import container_runtime, python_app
from roles.common import checked_file, render, role_settings
from roles.pki.web import check_profiles_behind_a_login, web_config_file
from roles.tuning import host_tuning

APP = python_app.PythonApp(source="toy_redis", distribution="toy-redis", service="toy-redis")
CONFIG_DIR = "/etc/toy-redis"
CONFIG_PATH = f"{CONFIG_DIR}/toy-redis.yaml"
REQUIREPASS_PATH = f"{CONFIG_DIR}/requirepass"
PASSWORD_SECRET = "toy_redis_password"
DATA_DIR = "/var/lib/toy-redis"
LOG_DIR = "/var/log/toy-redis"
LOG_FILE = f"{LOG_DIR}/toy-redis.log"
LOG_LINK = "/var/log/toy-redis.log"
LOG_GROUP = "adm"
LOGROTATE_PATH = "/etc/logrotate.d/toy-redis"
# The server's own validation, run on the node with the venv's binary before a config goes live.
CONFIG_CHECK = f"{APP.binary()} --check-config {{staged}}"
# Descriptors the server needs besides one per client: listeners, AOF, log, and the metrics
# endpoint's connections (which it caps).
RESERVED_FDS = 24 + METRICS_MAX_CONNECTIONS
# Memory the server uses besides its dataset (interpreter, buffers, AOF rewrite), for a container limit.
CONTAINER_OVERHEAD_MIB = 128


class Settings(Tuning):
    """Group data key `toy_redis`: toy-redis's own settings (toy_redis.config.Tuning: keys,
    defaults, bounds and meaning), what the role adds, and stricter checks where a deploy needs them."""

    # Served beyond localhost on a node, with the append-only file on.
    bind: str = "0.0.0.0"
    metrics_bind: str = "0.0.0.0"
    appendonly: bool = True
    # With pki.tls on, RESP is served over TLS on `port` (the port clients and the topology know)
    # with the node's certificate from roles/pki, and no plain listener: the role sets it.
    tls_port: int = Field(0, ge=0, le=0, description="set by the role: `port` when pki.tls is on")
    # With pki.tls on, a port here keeps plain RESP (requirepass still asked) beside TLS for clients
    # that cannot do TLS; the topology (listener resp_plain) opens it in the firewall to the same
    # callers. None: RESP only over TLS. Unused with pki.tls off, when `port` is plain.
    plain_port: Port | None = None
    # Clients log in with requirepass and verify the server with the cluster CA; a client
    # certificate is not asked for unless set (Redis's default is yes).
    tls_auth_clients: Literal["yes", "no", "optional"] = "no"
    # Require a password (the vault's toy_redis_password, in a file only the service can read):
    # the server listens beyond localhost. Off only for a node nobody else can reach.
    auth: bool = True
    # logrotate: rotated files kept, and the size that rotates early.
    log_keep: int = Field(7, ge=1, le=365)
    log_max_size: str = Field("100M", pattern=r"^[0-9]+[kMG]?$")
    # With runtime container: Docker's limits (the dataset's maxmemory must fit in memory_mib).
    container: container_runtime.ContainerLimits = container_runtime.ContainerLimits()

    @field_validator("port", "metrics_port")
    @classmethod
    def _fixed_port(cls, value: int) -> int:
        # Port 0 ("any free port") is for tests: clients must know where a node listens.
        if value == 0:
            raise ValueError("expected a port in 1..65535")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> "Settings":
        if self.metrics_port == self.port:
            raise FieldError("metrics_port", f"expected a port other than port ({self.port}), got {self.metrics_port}")
        if self.plain_port in (self.port, self.metrics_port):
            raise FieldError("plain_port", f"expected a port other than port ({self.port}) and metrics_port "
                                           f"({self.metrics_port}), got {self.plain_port}")
        return self


def config_values(settings: Settings, web_config_file: str | None = None) -> dict:
    """The server's config file as a mapping: toy-redis's settings, then the paths the role owns.
    With ``web_config_file`` (pki.tls on; roles.pki.web writes it): RESP over TLS on `port` in place
    of plain RESP (kept on `plain_port` if set), and the metrics over TLS with that file's logins."""
    from roles.pki import CA_FILE, CERT_FILE, KEY_FILE

    values = {name: getattr(settings, name) for name in Tuning.model_fields}
    values.update(dir=DATA_DIR, log_file=LOG_FILE)
    if settings.auth:
        values["requirepass_file"] = REQUIREPASS_PATH
    if web_config_file:
        values.update(port=settings.plain_port or 0, tls_port=settings.port, tls_cert_file=CERT_FILE, tls_key_file=KEY_FILE,
                      tls_ca_cert_file=CA_FILE, metrics_users_file=web_config_file)
    return values


def render_config(settings: Settings, web_config_file: str | None = None) -> str:
    return render("toy_redis/toy-redis.yaml.j2", config_yaml=yaml.safe_dump(
        config_values(settings, web_config_file), sort_keys=False).rstrip("\n"))


def render_unit(nofile: int) -> str:
    return render("toy_redis/toy-redis.service.j2", **python_app.unit_values(APP, CONFIG_PATH, DATA_DIR, nofile),
                  log_dir=LOG_DIR, logs_dir_name=LOG_DIR.removeprefix("/var/log/"))


def container(settings: Settings, nofile: int, tls: bool = False) -> container_runtime.Container:
    """With ``tls``, the node's TLS folder is mounted too, and the service reads its key as a member of its group."""
    from homelab.containers.images import spec_named
    from roles.pki import GROUP, TLS_DIR

    tls_mounts = (container_runtime.BindMount(TLS_DIR, readonly=True),) if tls else ()
    return container_runtime.Container(
        app=APP, image=spec_named(APP.service).tag, description="toy-redis, the project's Redis-protocol server",
        mounts=(container_runtime.BindMount(CONFIG_DIR, readonly=True), container_runtime.BindMount(DATA_DIR),
                container_runtime.BindMount(LOG_DIR), *tls_mounts),
        limits=settings.container, nofile=nofile, groups=(GROUP,) if tls else (),
    )


def check_dataset_fits_the_container(settings: Settings, where: str) -> None:
    """With runtime container: Docker kills the server past its memory limit, which must hold the
    dataset (maxmemory) and the server itself."""
    needed_mib = -(-settings.maxmemory // container_runtime.MIB) + CONTAINER_OVERHEAD_MIB
    if settings.maxmemory and settings.container.memory_mib < needed_mib:
        raise ConfigError(where, "toy_redis.container.memory_mib",
                          f"expected at least {needed_mib} (maxmemory {settings.maxmemory} bytes plus "
                          f"{CONTAINER_OVERHEAD_MIB} MiB for the server), got {settings.container.memory_mib}")


def render_logrotate(settings: Settings) -> str:
    return render("toy_redis/logrotate.j2", log_file=LOG_FILE, keep=settings.log_keep,
                  max_size=settings.log_max_size, user=APP.service, group=LOG_GROUP, service=APP.service)


def check_maxclients_fit(settings: Settings, nofile: int, where: str) -> None:
    """Refuse a maxclients the open-file limit cannot hold: clients would fail at accept() instead."""
    if settings.maxclients + RESERVED_FDS > nofile:
        raise ConfigError(
            where, "toy_redis.maxclients",
            f"expected at most {nofile - RESERVED_FDS} (limits.nofile {nofile} from the tuning file, "
            f"minus {RESERVED_FDS} for the server's own files), got {settings.maxclients}",
        )


@deploy("toy-redis")
def apply() -> None:
    settings = role_settings("toy_redis", Settings)
    nofile = host_tuning().limits.nofile
    check_maxclients_fit(settings, nofile, f"inventory data for {host.name}")
    check_profiles_behind_a_login("toy_redis", settings.profiling_hz)

    runtime = container_runtime.host_runtime()
    # Both runtimes run as this user: it owns the data and may read the password file.
    python_app.service_account(APP)
    # With pki.tls: TLS for RESP and the metrics, the metrics' logins (the user joins roles.pki.GROUP).
    web = web_config_file("toy_redis", APP.service)
    if runtime == "container":
        check_dataset_fits_the_container(settings, f"inventory data for {host.name}")
        boxed = container(settings, nofile, tls=web is not None)
        installed = container_runtime.image_ready(APP)
        config_check = container_runtime.check_command(boxed, "--check-config {staged}")
        unit_text = container_runtime.render_unit(boxed)
    else:
        installed = python_app.install(APP)
        config_check = CONFIG_CHECK
        unit_text = render_unit(nofile)

    files.directory(name=f"{CONFIG_DIR} folder", path=CONFIG_DIR, user="root", group=APP.service, mode="0750")
    # systemd would create them at start, but the config check before that may look for them.
    files.directory(name=f"{DATA_DIR} folder", path=DATA_DIR, user=APP.service, group=APP.service, mode="0750")
    files.directory(name=f"{LOG_DIR} folder", path=LOG_DIR, user=APP.service, group=APP.service, mode="0755")
    if settings.auth:
        from roles.secrets import secret_file

        password = secret_file(name="toy-redis password file", dest=REQUIREPASS_PATH, secret=PASSWORD_SECRET,
                               user="root", group=APP.service, mode="0640")
    else:
        password = files.file(name="No toy-redis password file (auth off)", path=REQUIREPASS_PATH, present=False)

    config = checked_file(
        name="toy-redis config",
        dest=CONFIG_PATH,
        content=render_config(settings, web.path if web else None),
        check=config_check,
        group=APP.service,
        mode="0640",
    )
    unit = python_app.unit(APP, unit_text)
    checked_file(
        name="toy-redis logrotate",
        dest=LOGROTATE_PATH,
        content=render_logrotate(settings),
        check="logrotate --debug {staged}",
    )
    # Readable by group adm like Debian's own logs (the log shippers' users are in it); logrotate
    # recreates it the same way.
    files.file(name="toy-redis log file", path=LOG_FILE, user=APP.service, group=LOG_GROUP, mode="0640")
    files.link(name=f"{LOG_LINK} points at the log", path=LOG_LINK, target=LOG_FILE.removeprefix("/var/log/"))

    # toy-redis reads its logins at start only (its certificate whenever the files change).
    changes = [config, unit, password, *(web.changes if web else ())]
    if runtime == "container":
        container_runtime.running(boxed, "toy_redis", [installed, *changes])
    else:
        python_app.running(APP, "toy_redis", restart_when_changed=changes, installed=installed)
