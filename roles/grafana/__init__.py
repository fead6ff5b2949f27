"""Grafana on a unix socket behind nginx, with datasources and dashboards provisioned from the repo.

Grafana listens on /run/grafana/grafana.sock only (tmpfiles.d recreates the folder at boot); the
nginx on the same node serves it on nginx's ports: over https on https_port with the node's
certificate when pki.tls is on, or with Grafana's own when certificate files are set in group
data, http_port then answering only a redirect there; else plain HTTP on http_port.
Datasources (Prometheus, Loki, Alertmanager) point at the first host of each role, found by
homelab.topology; where that listener is secured (pki.tls), over https with the cluster CA inline
and the login `grafana`, whose password Grafana expands from $HOMELAB_WEB_PASSWORD, set by a unit
drop-in's 0600 EnvironmentFile (provisioning files take environment variables, not $__file{}).
Dashboards are the JSON files in templates/grafana/dashboards/, and a dashboard removed there is
removed from Grafana on the next deploy.

The admin password is the vault secret grafana_admin_password, written to a 0640 root:grafana
file that grafana.ini reads with $__file{}. A new database takes it from there; an existing one gets
a changed secret through `grafana cli admin reset-admin-password`, fed on standard input (never on a
command line), run while Grafana is stopped so it cannot race the server's own use of the SQLite
database. What the package installs (binary, unit, user, paths) is in roles/grafana/package.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydantic import Field, model_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, FindFiles
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from homelab.alerts import slo_dashboard
from homelab.alerts.render import SLOS_FILE, load_slos
from homelab.config import ConfigError, FieldError, StrictModel
from homelab.topology import Topology
from homelab.types import SCHEME_PORTS, Port
from roles.common import REPO_ROOT, TEMPLATES_DIR, checked_file, current_topology, render, restart, role_settings
from roles.grafana.package import CLI, DATA_DIR, DATABASE, LOG_DIR, PACKAGE, PLUGINS_DIR, PROVISIONING_DIR
from roles.grafana_repo import GrafanaInstall, install_grafana_package
from roles.nginx import NGINX_USER, https_redirect, site
from roles.nginx import Settings as NginxSettings
from roles.secrets import secret_file
from roles.tuning import host_tuning

SERVICE = PACKAGE.service
CONFIG_FILE = PACKAGE.config_file
# Grafana's login to secured datasources (homelab.access.callers names each caller by its role),
# and where its password reaches the service: an environment variable the provisioning file names.
WEB_USER = "grafana"
WEB_PASSWORD_ENV = "HOMELAB_WEB_PASSWORD"
WEB_PASSWORD_FILE = "/etc/grafana/web-password.env"
WEB_PASSWORD_DROPIN = f"/etc/systemd/system/{SERVICE}.service.d/homelab-web-password.conf"
ADMIN_PASSWORD_FILE = "/etc/grafana/admin_password"
SOCKET_DIR = "/run/grafana"
SOCKET = f"{SOCKET_DIR}/grafana.sock"
# The group that owns the socket (the service's own group); nginx's user joins it.
SOCKET_GROUP = PACKAGE.group
TMPFILES_FILE = "/etc/tmpfiles.d/grafana.conf"
DASHBOARDS_SOURCE = TEMPLATES_DIR / "grafana" / "dashboards"
DASHBOARDS_DIR = f"{DATA_DIR}/dashboards/homelab"
# Sets a changed admin password in an existing database; the password comes on standard input.
RESET_ADMIN_PASSWORD = (f"runuser -u {PACKAGE.user} -- {CLI} admin reset-admin-password --password-from-stdin "
                        f"< {ADMIN_PASSWORD_FILE}")
SITE_NAME = "grafana"


class Settings(StrictModel):
    """Group data key `grafana`."""

    install: GrafanaInstall
    # The name users type in the browser; nginx serves Grafana for it. Default: the host's name.
    server_name: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+$")
    admin_user: str = Field("admin", pattern=r"^[A-Za-z0-9_.@-]+$")
    # None: nginx's on this host (nginx.listen_port, nginx.https_port).
    http_port: Port | None = None
    https_port: Port | None = None
    # Paths on the node; both set = TLS on https_port with this certificate instead of the node's
    # (pki.tls), with http_port redirecting to it.
    tls_certificate: str | None = Field(None, pattern=r"^/\S+$")
    tls_certificate_key: str | None = Field(None, pattern=r"^/\S+$")

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> "Settings":
        if bool(self.tls_certificate) != bool(self.tls_certificate_key):
            missing = "tls_certificate_key" if self.tls_certificate else "tls_certificate"
            raise FieldError(missing, "required when the other TLS file is set (both or neither)")
        return self

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate)

    def on_nginx(self, nginx: NginxSettings) -> "Settings":
        """These settings with the ports resolved: nginx's own unless group data sets them."""
        return self.model_copy(update={"http_port": self.http_port or nginx.listen_port,
                                       "https_port": self.https_port or nginx.https_port})


def serves_tls(settings: Settings, node_tls: bool) -> bool:
    """Whether Grafana's site is https (on https_port): with its own certificate, or the node's
    when pki.tls is on (``node_tls``)."""
    return settings.tls or node_tls


def root_url(settings: Settings, server_name: str, node_tls: bool = False) -> str:
    """Where users reach Grafana: https_port when its site serves TLS, else http_port."""
    scheme, port = ("https", settings.https_port) if serves_tls(settings, node_tls) else ("http", settings.http_port)
    return f"{scheme}://{server_name}{'' if port == SCHEME_PORTS[scheme] else f':{port}'}/"


def render_grafana_ini(settings: Settings, server_name: str, node_tls: bool = False) -> str:
    return render(
        "grafana/grafana.ini.j2",
        data_dir=DATA_DIR,
        logs_dir=LOG_DIR,
        plugins_dir=PLUGINS_DIR,
        provisioning_dir=PROVISIONING_DIR,
        socket=SOCKET,
        server_name=server_name,
        root_url=root_url(settings, server_name, node_tls),
        admin_user=settings.admin_user,
        admin_password_ref=f"$__file{{{ADMIN_PASSWORD_FILE}}}",
        tls=serves_tls(settings, node_tls),
    )


@dataclass(frozen=True)
class Datasource:
    """How Grafana reaches one datasource: its URL, and with TLS (pki.tls on its host) the cluster
    CA's certificate (PEM, which Grafana's provisioning takes inline) and Grafana's login (None
    where the listener asks for none)."""

    url: str
    ca_pem: str | None = None
    user: str | None = None


def render_datasources(prometheus: Datasource, loki: Datasource, alertmanager: Datasource) -> str:
    # The password is never in the file: Grafana expands $WEB_PASSWORD_ENV from its unit's environment.
    return render("grafana/datasources.yaml.j2", prometheus=prometheus, loki=loki, alertmanager=alertmanager,
                  password_ref=f"${WEB_PASSWORD_ENV}")


def render_dashboard_provider() -> str:
    return render("grafana/dashboards.yaml.j2", dashboards_dir=DASHBOARDS_DIR)


def render_tmpfiles() -> str:
    return render("grafana/tmpfiles.conf.j2", socket_dir=SOCKET_DIR, user=PACKAGE.user, group=PACKAGE.group)


def render_site(settings: Settings, server_name: str, keepalive: int, node_tls: bool = False) -> str:
    """nginx's server blocks for Grafana; with TLS (serves_tls) https_port serves it, with its own
    certificate or else the node's (nginx.conf names it), and http_port redirects there."""
    return render(
        "grafana/nginx-site.conf.j2",
        socket=SOCKET,
        server_name=server_name,
        keepalive=keepalive,
        tls=serves_tls(settings, node_tls),
        http_port=settings.http_port,
        https_port=settings.https_port,
        redirect=https_redirect(settings.https_port),
        tls_certificate=settings.tls_certificate,
        tls_certificate_key=settings.tls_certificate_key,
    )


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_SOURCE.glob("*.json"))


def dashboards(slos_file: Path = SLOS_FILE) -> dict[str, str]:
    """File name -> JSON of every provisioned dashboard: the repo's files and the one generated from
    the SLO file (validated here: a bad file stops the run before any host changes)."""
    found = {path.name: path.read_text() for path in dashboard_files()}
    for name, text in found.items():
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(DASHBOARDS_SOURCE.relative_to(REPO_ROOT) / name, f"line {exc.lineno}",
                              f"expected a JSON dashboard ({exc.msg})") from None
    found[slo_dashboard.FILE_NAME] = slo_dashboard.dashboard_text(load_slos(slos_file))
    return found


def datasources(topology: Topology, ca_pem: str | None = None) -> dict[str, Datasource]:
    """Each datasource: the first host of its role, on that host's port; over https with the CA
    (``ca_pem``, the cluster CA bundle) and Grafana's login where that listener is secured."""
    from roles.pki.web import client

    found = {}
    for role in ("prometheus", "loki", "alertmanager"):
        endpoint = topology.endpoint(role)
        way = client(topology, role, endpoint.host, "http", WEB_USER, "")
        if way.scheme == "https" and not ca_pem:
            raise ConfigError(f"inventory data for {endpoint.host}", "vault_file",
                              f"the cluster CA certificate beside the vault is needed: {role} serves TLS (pki.tls)")
        # Grafana's login only where the listener asks for one (Loki's: TLS only).
        found[role] = (Datasource(endpoint.url(scheme="https"), ca_pem, WEB_USER if way.username else None)
                       if way.scheme == "https" else Datasource(endpoint.url()))
    return found


def cluster_ca_pem() -> str | None:
    """The cluster CA bundle beside this host's vault (homelab.access.ca_cert_path), if there is one."""
    from homelab.access import ca_cert_path

    vault_file = host.data.get("vault_file")
    path = ca_cert_path(vault_file) if vault_file else None
    return path.read_text() if path and path.is_file() else None


def web_password(sources: dict[str, Datasource]):
    """With a secured datasource, Grafana's web password in its unit's environment (an
    EnvironmentFile only root reads, via a drop-in): the operations, to restart on."""
    from roles.secrets import private_file
    from homelab.access import password_secret
    from homelab.vault import host_secret

    wanted = any(source.user for source in sources.values())
    if not wanted:
        return [files.file(name=f"No Grafana web password file {WEB_PASSWORD_FILE}", path=WEB_PASSWORD_FILE, present=False),
                files.file(name=f"No Grafana web password drop-in {WEB_PASSWORD_DROPIN}", path=WEB_PASSWORD_DROPIN,
                           present=False)]
    env = private_file(name=f"Grafana's web password {WEB_PASSWORD_FILE}", dest=WEB_PASSWORD_FILE, mode="0600",
                       content=BytesIO(f"{WEB_PASSWORD_ENV}={host_secret(password_secret(WEB_USER))}\n".encode()))
    files.directory(name="Grafana unit drop-in folder", path=str(Path(WEB_PASSWORD_DROPIN).parent))
    dropin = files.put(name=f"Grafana reads its web password from {WEB_PASSWORD_FILE}", dest=WEB_PASSWORD_DROPIN,
                       src=BytesIO(f"[Service]\nEnvironmentFile={WEB_PASSWORD_FILE}\n".encode()))
    systemd.daemon_reload(name="systemd reads Grafana's drop-in", _if=dropin.did_change)
    return [env, dropin]


@deploy("grafana")
def apply() -> None:
    topology = current_topology()
    settings = role_settings("grafana", Settings).on_nginx(topology.settings(host.name, "nginx"))
    server_name = settings.server_name or host.name
    node_tls = topology.settings(host.name, "pki").tls
    sources = datasources(topology, cluster_ca_pem())
    wanted_dashboards = dashboards()
    # Read before anything is installed: on a first deploy there is no database yet.
    database_existed = bool(host.get_fact(File, path=DATABASE))
    if not install_grafana_package(PACKAGE, settings.install):
        return

    runtime_dir = checked_file(name="Grafana socket folder at boot (tmpfiles.d)", dest=TMPFILES_FILE,
                               content=render_tmpfiles())
    server.shell(name="Create Grafana's socket folder", commands=[f"systemd-tmpfiles --create {TMPFILES_FILE}"],
                 _if=runtime_dir.did_change)
    group = PACKAGE.group
    password = secret_file(name="Grafana admin password", dest=ADMIN_PASSWORD_FILE,
                           secret="grafana_admin_password", user="root", group=group, mode="0640")
    config = checked_file(name="grafana.ini", dest=CONFIG_FILE, content=render_grafana_ini(settings, server_name, node_tls),
                          group=group, mode="0640")
    provisioned = checked_file(name="Grafana datasources", dest=f"{PROVISIONING_DIR}/datasources/homelab.yaml",
                               content=render_datasources(**sources), group=group, mode="0640")
    password_changes = web_password(sources)
    provider = checked_file(name="Grafana dashboard provider", dest=f"{PROVISIONING_DIR}/dashboards/homelab.yaml",
                            content=render_dashboard_provider(), group=group, mode="0640")
    files.directory(name="Dashboards folder", path=DASHBOARDS_DIR, user="root", group=group, mode="0750")
    # Grafana rereads this folder on its own (updateIntervalSeconds); deleted files leave Grafana too.
    for name, text in wanted_dashboards.items():
        checked_file(name=f"Dashboard {name}", dest=f"{DASHBOARDS_DIR}/{name}", content=text, group=group, mode="0640")
    present = host.get_fact(FindFiles, path=DASHBOARDS_DIR, maxdepth=1) or []
    for stale in sorted(set(present) - {f"{DASHBOARDS_DIR}/{name}" for name in wanted_dashboards}):
        files.file(name=f"Remove dashboard no longer provisioned: {stale}", path=stale, present=False)

    # grafana.ini's admin_password only seeds a new database; an existing one needs the CLI. The
    # server is stopped first: the CLI and the server starting up (migrations) would both write the
    # SQLite file, and one of them would fail with "database is locked".
    if database_existed:
        systemd.service(name="Stop Grafana for the admin password change", service=SERVICE, running=False,
                        _if=password.did_change)
        server.shell(name="Apply a changed Grafana admin password", commands=[RESET_ADMIN_PASSWORD],
                     _if=password.did_change)
    systemd.service(name="Grafana enabled and running", service=SERVICE, running=True, enabled=True)
    # A server just started again after the password change already reads the new settings.
    restart(SERVICE, "grafana", "Restart Grafana for new settings",
            lambda: any_changed(config, provisioned, provider, *password_changes)()
            and not (database_existed and password.did_change()))

    # nginx runs first on this node, before the grafana group existed: join it here and reload.
    joined = server.user(name=f"{NGINX_USER} may open Grafana's socket", user=NGINX_USER, groups=[SOCKET_GROUP],
                         append=True, create_home=False, ensure_home=False)
    systemd.service(name="Reload nginx for its new group", service="nginx", reloaded=True, _if=joined.did_change)
    site(SITE_NAME, render_site(settings, server_name, host_tuning().nginx.upstream_keepalive, node_tls))
