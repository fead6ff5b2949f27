"""nginx with socket settings from the tuning file, its exporters, and sites other roles add.

Worker, connection, file-limit and backlog settings come from the tuning file's `nginx:` section
(inventory/tuning.yaml), where the backlog is checked against net.core.somaxconn. Upstreams on unix
sockets work only if nginx's user may open the socket: `socket_groups` lists the groups that own
such sockets (e.g. grafana), and www-data is added to them.

Other roles add a site with `site(name, content)`: the staged site is checked with `nginx -t`
together with the live config and the other sites before it is enabled, then nginx reloads.

With `pki.tls` on (issue 13) every listener of the role serves TLS with the node's certificate
(roles/pki), which nginx's root master reads at start and reload: the deploy reloads nginx
(gracefully) when it gives the node a new pair, and nginx's workers never read the key (nor is
www-data in the key's group). The sites (ours, Grafana's) serve https without a login. mtail
cannot do TLS, nor can Debian 12's nginx exporter (0.11): both listen on loopback only
(`*_loopback_port`) and nginx fronts them on their public ports (site FRONTED_SITE), on every
release alike. There callers authenticate with their node certificate (Listener.client_cert):
nginx verifies it against the cluster CA during the handshake and admits only the certificate
names the topology says call that port (homelab.access.certificate_names), 403 for any other.
Not a password: nginx would check a bcrypt hash (tens of milliseconds) per request, uncached, in
its event loop, so anyone reaching the port could stall the whole site by sending wrong ones.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pydantic import Field
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Groups, Users
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from homelab.config import StrictModel
from homelab.types import SCHEME_PORTS, Port
from roles.common import checked_file, current_topology, render, restart, role_settings
from roles.install import Install, install_packages
from roles.pki import CA_FILE, CERT_FILE, GROUP, KEY_FILE, TLS_DIR, certificate_written
from roles.tuning import host_tuning, tuning_path

SITES_DIR = "/etc/nginx/sites-enabled"
ACCESS_LOG = "/var/log/nginx/access.log"
MTAIL_PROGRAM = "/etc/mtail/nginx-responses.mtail"
NGINX_USER = "www-data"
# With pki.tls on: the site fronting what cannot serve TLS itself.
FRONTED_SITE = "fronted-exporters"
# What earlier deploys left with pki.tls on: the fronted ports' bcrypt logins, and Debian 13's
# exporter's own web config (the role's name under roles.pki.web's WEB_CONFIG_DIR).
STALE_TLS_FILES = (f"{TLS_DIR}/nginx.htpasswd", f"{TLS_DIR}/nginx.yml")
# With pki.tls on: nginx.conf's ssl_certificate lines, in the folder removed with the node's key.
CERTIFICATE_INCLUDE = f"{TLS_DIR}/nginx-certificate.conf"


class Upstream(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # "unix:/run/grafana/grafana.sock" or "127.0.0.1:3000"
    server: str


class Settings(StrictModel):
    """Group data key `nginx`."""

    install: Install = Install()
    listen_port: Port = SCHEME_PORTS["http"]
    # With pki.tls on the site (Grafana's too) is served here, and listen_port only redirects to it.
    https_port: Port = SCHEME_PORTS["https"]
    status_port: Port = 8081
    exporter_port: Port = 9113
    mtail_port: Port = 3903
    # With pki.tls on, where mtail and the exporter listen on loopback while nginx serves
    # mtail_port and exporter_port in front of them, with TLS and callers' certificates.
    exporter_loopback_port: Port = 19113
    mtail_loopback_port: Port = 13903
    static_root: str = "/var/www/homelab"
    upstreams: list[Upstream] = []
    # Groups owning unix sockets nginx proxies to; nginx's user joins those that exist.
    socket_groups: list[str] = []


def render_nginx_conf(settings: Settings, tuning, tuning_source: str) -> str:
    return render(
        "nginx/nginx.conf.j2",
        nginx=tuning.nginx,
        upstreams=settings.upstreams,
        status_port=settings.status_port,
        access_log=ACCESS_LOG,
        sites_dir=SITES_DIR,
        tuning_source=tuning_source,
        # A pattern, which nginx allows to match no file.
        certificate_include=CERTIFICATE_INCLUDE.replace(".conf", "*.conf"),
    )


def render_certificate_include() -> str:
    return render("nginx/node-certificate.conf.j2", cert_file=CERT_FILE, key_file=KEY_FILE)


# What listen_port answers with pki.tls on (blackbox's redirect probe expects it).
REDIRECT_STATUS = 301


def https_redirect(https_port: int) -> str:
    """nginx's `return` of a REDIRECT_STATUS to the same host and path over https on ``https_port``
    (no port in the URL when it is HTTPS's own)."""
    port = "" if https_port == SCHEME_PORTS["https"] else f":{https_port}"
    return f"return {REDIRECT_STATUS} https://$host{port}$request_uri;"


def render_default_site(settings: Settings, tuning, tls: bool = False) -> str:
    """The static site and the health page: on listen_port, or with pki.tls on (``tls``) on
    https_port, listen_port then answering every request with a redirect there."""
    return render(
        "nginx/default-site.conf.j2",
        nginx=tuning.nginx,
        listen_port=settings.listen_port,
        site_port=settings.https_port if tls else settings.listen_port,
        redirect=https_redirect(settings.https_port),
        static_root=settings.static_root,
        tls=tls,
    )


class Front(StrictModel):
    """One backend nginx fronts with pki.tls on: the public port nginx serves, the backend's
    loopback port, and the certificate names (CNs) of the callers it admits."""

    public_port: Port
    loopback_port: Port
    callers: list[str]


def fronted(settings: Settings, caller_names: dict[str, list[str]]) -> dict[str, Front]:
    """With pki.tls on: listener name -> its Front, for each backend that cannot do TLS itself;
    ``caller_names``: the certificate names each listener admits (homelab.access.certificate_names)."""
    ports = {"exporter": (settings.exporter_port, settings.exporter_loopback_port),
             "mtail": (settings.mtail_port, settings.mtail_loopback_port)}
    return {name: Front(public_port=public, loopback_port=loopback, callers=caller_names[name])
            for name, (public, loopback) in sorted(ports.items())}


def topology_fronts(topology, host_name: str, settings: Settings) -> dict[str, Front]:
    """fronted() for ``host_name``, with the callers ``topology`` names for each listener."""
    from homelab.access import certificate_names

    return fronted(settings, {name: certificate_names(topology, host_name, "nginx", name)
                              for name in ("exporter", "mtail")})


def render_fronted_site(fronts: dict[str, Front], ca_file: str = CA_FILE) -> str:
    from homelab.alerts.catalog import NOT_A_CALLER_STATUS

    return render("nginx/fronted-site.conf.j2", fronts=fronts, ca_file=ca_file, not_a_caller_status=NOT_A_CALLER_STATUS)


def site_check_command(name: str) -> str:
    """Shell that runs `nginx -t` on the live config with ``{staged}`` standing in for site ``name``.

    The check runs in a scratch copy of the sites folder, so neither a half-written live site nor
    the staged file itself is ever seen by the running nginx.
    """
    site = shlex.quote(f"{name}.conf")
    return (
        "scratch=$(mktemp -d) && mkdir \"$scratch\"/sites && "
        f"cp -p {SITES_DIR}/*.conf \"$scratch\"/sites/ 2>/dev/null; "
        f"cp {{staged}} \"$scratch\"/sites/{site} && "
        f"sed 's#include {SITES_DIR}/#include '\"$scratch\"'/sites/#' /etc/nginx/nginx.conf > \"$scratch\"/nginx.conf.test && "
        "nginx -t -q -c \"$scratch\"/nginx.conf.test; "
        "status=$?; rm -rf \"$scratch\"; exit $status"
    )


def site(name: str, content: str):
    """Enable site ``name`` (a server block) once it passes `nginx -t`; reload nginx if it changed."""
    changed = checked_file(
        name=f"nginx site {name}",
        dest=f"{SITES_DIR}/{name}.conf",
        content=content,
        check=site_check_command(name),
    )
    systemd.service(name=f"Reload nginx for site {name}", service="nginx", reloaded=True, _if=changed.did_change)
    return changed


MTAIL_CHECK = (
    "scratch=$(mktemp -d) && cp {staged} \"$scratch\"/check.mtail && "
    "mtail --compile_only --address 127.0.0.1 --port 0 --logtostderr --progs \"$scratch\" >/dev/null 2>\"$scratch\"/err; "
    "status=$?; cat \"$scratch\"/err | grep -v '^I' >&2; rm -rf \"$scratch\"; exit $status"
)


@deploy("nginx")
def apply() -> None:
    settings = role_settings("nginx", Settings)
    tuning = host_tuning()
    tls = current_topology().settings(host.name, "pki").tls
    install_packages("nginx", ["nginx"], settings.install)
    install_packages("nginx", ["prometheus-nginx-exporter", "mtail"], Install())

    # The permission trap: a unix-socket upstream owned by another group refuses nginx's workers.
    existing_groups = host.get_fact(Groups)
    joined = [group for group in settings.socket_groups if group in existing_groups]
    if joined:
        server.user(
            name=f"{NGINX_USER} joins socket groups {', '.join(joined)}",
            user=NGINX_USER, groups=joined, append=True, create_home=False, ensure_home=False,
        )
    # mtail reads nginx's access log, which Debian writes as www-data:adm 0640.
    server.user(name="mtail may read nginx logs", user="mtail", groups=["adm"], append=True,
                create_home=False, ensure_home=False)

    files.directory(name="Static files folder", path=settings.static_root, mode="0755")
    files.put(
        name="Static index page",
        src=StringIO(render("nginx/index.html.j2", host_name=host.name)),
        dest=f"{settings.static_root}/index.html",
        mode="0644",
    )
    # Debian's own default site would claim default_server on HTTP's port beside ours.
    files.link(name="Remove Debian's default site", path=f"{SITES_DIR}/default", present=False)

    nginx_conf(settings, tuning, tls)
    site("default", render_default_site(settings, tuning, tls))

    fronts = topology_fronts(current_topology(), host.name, settings) if tls else {}
    if not tls:
        # Before the backends take their public ports back from nginx.
        gone = files.file(name=f"No site {FRONTED_SITE} with pki.tls off", path=f"{SITES_DIR}/{FRONTED_SITE}.conf",
                          present=False)
        systemd.service(name=f"Reload nginx without site {FRONTED_SITE}", service="nginx", reloaded=True,
                        _if=gone.did_change)
    nginx_exporter(settings, tls)
    mtail(settings, tls)
    if fronts:
        # Once the backends left the public ports for loopback: nginx binds those now.
        site(FRONTED_SITE, render_fronted_site(fronts))
    # Once nothing reads them any more.
    for stale in STALE_TLS_FILES:
        files.file(name=f"No {stale} (left by an earlier deploy)", path=stale, present=False)


def nginx_conf(settings: Settings, tuning, tls: bool) -> None:
    """nginx.conf and, with pki.tls on, its certificate lines; nginx running, reloaded for them."""
    left = leave_key_group()
    include = (files.put(name=f"nginx's certificate lines {CERTIFICATE_INCLUDE}",
                         src=StringIO(render_certificate_include()), dest=CERTIFICATE_INCLUDE,
                         user="root", group="root", mode="0644"),) if tls else ()
    main_conf = checked_file(
        name="nginx.conf",
        dest="/etc/nginx/nginx.conf",
        content=render_nginx_conf(settings, tuning, str(tuning_path().name)),
        check="nginx -t -q -c {staged}",
    )
    systemd.service(name="nginx enabled and running", service="nginx", running=True, enabled=True)
    # A reload makes the master read nginx.conf and the node's certificate and key again, and
    # starts workers with the groups the user has now.
    systemd.service(name="Reload nginx for nginx.conf, the node's certificate or its groups", service="nginx",
                    reloaded=True, _if=any_changed(main_conf, *include, *left, *certificate_written()))


def leave_key_group() -> tuple:
    """nginx's user out of the node key's group, which an earlier deploy added it to when workers
    loaded the certificate per handshake: only the root master reads the key now."""
    if GROUP not in host.get_fact(Users).get(NGINX_USER, {}).get("groups", []):
        return ()
    return (server.shell(name=f"{NGINX_USER} no longer reads the node's TLS key (group {GROUP})",
                         commands=[f"gpasswd -d {NGINX_USER} {GROUP}"]),)


def exporter_listen(settings: Settings, tls: bool) -> str:
    """The exporter's listen address: its public port, or with pki.tls on loopback behind nginx."""
    return f"127.0.0.1:{settings.exporter_loopback_port}" if tls else f":{settings.exporter_port}"


def nginx_exporter(settings: Settings, tls: bool = False) -> None:
    """prometheus-nginx-exporter, reading the status page on settings.status_port."""
    exporter = checked_file(
        name="nginx exporter flags",
        dest="/etc/default/prometheus-nginx-exporter",
        content=render("nginx/nginx-exporter.default.j2", status_port=settings.status_port,
                       listen=exporter_listen(settings, tls)),
    )
    # The package starts the exporter at install with its stock flags, which point at a status port
    # nobody serves, so it fails into systemd's start limit: clear that before restarting it.
    server.shell(
        name="Restart nginx exporter for new flags",
        commands=["systemctl reset-failed prometheus-nginx-exporter", "systemctl restart prometheus-nginx-exporter"],
        _if=exporter.did_change,
    )
    systemd.service(name="nginx exporter running", service="prometheus-nginx-exporter", running=True, enabled=True)


def mtail(settings: Settings, tls: bool = False) -> None:
    """mtail, counting responses by status from nginx's access log."""
    program = checked_file(
        name="mtail program for nginx responses",
        dest=MTAIL_PROGRAM,
        content=render("nginx/responses.mtail.j2"),
        check=MTAIL_CHECK,
    )
    mtail_flags = checked_file(
        name="mtail flags",
        dest="/etc/default/mtail",
        content=render("nginx/mtail.default.j2", access_log=ACCESS_LOG,
                       address="127.0.0.1" if tls else "0.0.0.0",
                       port=settings.mtail_loopback_port if tls else settings.mtail_port),
    )
    systemd.service(name="mtail running", service="mtail", running=True, enabled=True)
    restart("mtail", "nginx", "Restart mtail for new program or flags", any_changed(program, mtail_flags),
            listeners=("mtail",))

