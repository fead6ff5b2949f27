"""Alertmanager on the alertmanager group: routing from alerts/routes.yaml, alerts to the relay's webhook.

The route tree (grouping, waits, repeat intervals, label matchers -> receiver) is generated from
the `alertmanager:` section of alerts/routes.yaml (see roles/alertmanager/routing.py). Every
notification goes to one webhook, the alert relay's, which is authenticated with a bearer token
that Alertmanager reads from a file on the node; that file is written from the vault secret
`alertmanager_webhook_token`, so the token is in neither the config nor any command line.
The config is swapped only after `amtool check-config` passes, then Alertmanager reloads.
"""

from __future__ import annotations

from pydantic import Field
from pyinfra.api import deploy

from homelab.config import ConfigError, StrictModel
from homelab.topology import Topology
from homelab.types import Duration, Port
from roles.alertmanager.maintenance_windows import Window, load_windows, window_routes
from roles.alertmanager.routing import BLACKHOLE_RECEIVER, RELAY_RECEIVER, Routing, load_routing
from roles.common import REPO_ROOT, checked_file, current_topology, keep_running, render, role_settings
from roles.install import Install, install_packages
from roles.pki.web import web_config

PACKAGE = "prometheus-alertmanager"
SERVICE = "prometheus-alertmanager"
CONFIG_FILE = "/etc/prometheus/alertmanager.yml"
DEFAULTS_FILE = "/etc/default/prometheus-alertmanager"
# Debian's default; kept so silences and the notification log survive the switch to managed flags.
STORAGE_PATH = "/var/lib/prometheus/alertmanager/"
CONFIG_CHECK = "amtool check-config {staged}"
WEBHOOK_PATH = "/alertmanager"
TOKEN_SECRET = "alertmanager_webhook_token"
# Alertmanager runs as the prometheus user (Debian's unit); it only needs to read the token.
SERVICE_GROUP = "prometheus"


class Settings(StrictModel):
    """Group data key `alertmanager`."""

    install: Install = Install()
    listen_port: Port = 9093
    # Repo-relative; its `alertmanager:` section becomes the route tree.
    routes_file: str = "alerts/routes.yaml"
    # Repo-relative; recurring maintenance windows, muting their nodes' alerts while open.
    maintenance_file: str = "alerts/maintenance.yaml"
    # None: the first alert_relay host's webhook, http://<its address>:<its listen port>/alertmanager.
    webhook_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    webhook_token_file: str = Field("/etc/prometheus/alertmanager-webhook.token", pattern=r"^/[^\s]+$")
    resolve_timeout: Duration = "5m"


def webhook(settings: Settings, topology: Topology) -> tuple[str, str | None]:
    """The relay's webhook URL, and the CA to verify it with when it serves TLS (pki.tls)."""
    from roles.pki.web import client

    if settings.webhook_url:
        return settings.webhook_url, None
    if not topology.hosts_of("alert_relay"):
        raise ConfigError("inventory/group_data/alertmanager.py", "alertmanager.webhook_url",
                          "required when the inventory has no alert_relay host")
    relay = topology.endpoint("alert_relay")
    # The webhook's credential is its bearer token; the login client() names is not sent.
    way = client(topology, "alert_relay", relay.host, "http", "alertmanager", "")
    return relay.url(WEBHOOK_PATH, way.scheme), way.ca_file


def routing(settings: Settings) -> Routing:
    return load_routing(REPO_ROOT / settings.routes_file, settings.routes_file)


def maintenance_windows(settings: Settings, topology: Topology) -> dict[str, Window]:
    return load_windows(REPO_ROOT / settings.maintenance_file, settings.maintenance_file, topology)


def render_config(settings: Settings, topology: Topology, routes: Routing | None = None) -> str:
    routes = routes or routing(settings)
    windows = maintenance_windows(settings, topology)
    user_routes = [route.config() for route in routes.routes]
    return render(
        "alertmanager/alertmanager.yml.j2",
        settings=settings,
        routing=routes,
        routes=window_routes(windows, topology, user_routes) + user_routes,
        time_intervals={name: window.time_intervals() for name, window in windows.items()},
        maintenance_file=settings.maintenance_file,
        relay_receiver=RELAY_RECEIVER,
        blackhole_receiver=BLACKHOLE_RECEIVER,
        webhook=webhook(settings, topology),
        routes_file=settings.routes_file,
    )


def render_defaults(settings: Settings, web_flags: list[str] = ()) -> str:
    return render("alertmanager/prometheus-alertmanager.default.j2", config_file=CONFIG_FILE,
                  storage_path=STORAGE_PATH, listen_port=settings.listen_port, web_flags=web_flags)


@deploy("alertmanager")
def apply() -> None:
    from roles.secrets import secret_file

    settings = role_settings("alertmanager", Settings)
    # Rendered before anything is installed: a broken routes file stops the run with no change.
    config_text = render_config(settings, current_topology())
    install_packages("alertmanager", [PACKAGE], settings.install)

    secret_file(
        name=f"Webhook bearer token {settings.webhook_token_file}",
        dest=settings.webhook_token_file,
        secret=TOKEN_SECRET,
        user="root",
        group=SERVICE_GROUP,
        mode="0640",
    )
    config = checked_file(name=f"Routing {CONFIG_FILE}", dest=CONFIG_FILE, content=config_text,
                          check=CONFIG_CHECK)
    web_flags = web_config("alertmanager", SERVICE_GROUP)
    flags = checked_file(name=f"Alertmanager flags in {DEFAULTS_FILE}", dest=DEFAULTS_FILE,
                         content=render_defaults(settings, web_flags))
    # The token file is read on every notification, so a new token needs no reload.
    keep_running(SERVICE, "alertmanager", restart_on=(flags,), reload_on=(config,))
