"""The cluster's topology: which hosts run which role, where each service listens, who calls whom.

Built from a pyinfra inventory (the one a deploy runs against, or an inventory file read the way
pyinfra reads it) and each role's validated settings, so a port or an address is declared once,
in the role that owns it (its `Settings`), and read from here by every other role, the deploy's
role list and the architecture diagram.

    topology = Topology(inventory)            # or Topology.load("inventory/homelab.py")
    topology.roles_of("worker-node-14")       # ["base", "tuning", "node_exporter", "alert_relay", ...]
    topology.hosts_of("loki")                 # ["worker-node-11"]
    topology.endpoint("prometheus").url()     # "http://192.168.1.14:<its listen_port>", the first host
    topology.endpoint("toy_redis", "worker-node-12", "metrics").instance   # "worker-node-12:<metrics_port>"
    topology.scrape_jobs(); topology.health_probes(); topology.flows()
    # The control machine's way in (homelab.access): URL with its scheme, CA to verify, login.
    topology.access("prometheus").get("/api/v1/query", params={"query": "up"})
    topology.inbound("worker-node-12")        # each port it listens on, with the hosts and parties calling it

ROLES lists every role in the order a host applies them, with the listeners each one has (the
Settings field holding the port, and the HTTP path that answers when healthy) and the scrape job
Prometheus collects it under. FLOWS lists the connections between roles that are not scrapes or
probes. Any inventory mistake found here is a one-line ConfigError naming the host and key.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pyinfra.api.inventory import Inventory

from homelab.config import ConfigError, settings_from_data
from homelab.types import port_of

if TYPE_CHECKING:
    from homelab.access import Access


@dataclass(frozen=True)
class Listener:
    """A port a role's service listens on."""

    name: str  # "http", "metrics", "resp", ...
    # The role's Settings field holding the port: an int, or a HostPort string ("0.0.0.0:<port>").
    setting: str
    # An HTTP path answering 2xx while the service is healthy; blackbox probes it on every host.
    health: str | None = None
    # Serves TLS with the cluster CA's certificate and asks for a login when the host's pki.tls is
    # on (homelab.access says how the control machine reaches it).
    secured: bool = False
    # What it speaks: "http" (a web login from homelab.access; blackbox checks it), or "resp"
    # (Redis's protocol; its login is requirepass).
    protocol: str = "http"
    # Whether a secured web listener asks for our login (homelab.access). False: TLS only, for a
    # site whose application has its own (nginx's sites: Grafana), or a service that has none
    # (Loki: its firewall admits only its callers).
    login: bool = True
    # Whether, with pki.tls on, its callers authenticate with their node certificate (the cluster
    # CA's, CN = the caller's inventory name; homelab.access.certificate_names) instead of a login:
    # nginx checks it at the handshake, for the backends it fronts (roles/nginx), where a password
    # would cost a bcrypt check per request in nginx's event loop.
    client_cert: bool = False
    # A plain listener kept beside secured ones: served only on hosts with pki.tls on whose setting
    # holds a port (None: not served). With TLS off the secured listeners are the plain ones.
    beside_tls: bool = False
    # The Settings field holding its port on hosts with pki.tls on, where that differs from
    # ``setting`` (nginx's site moves to HTTPS's port; its HTTP port then only redirects).
    tls_setting: str | None = None
    # Answers every request with a redirect to the role's https listener: its health probe expects
    # that redirect (not followed), not a 2xx.
    redirect: bool = False

    @property
    def web_login(self) -> bool:
        """Whether, with pki.tls on, it asks for our web login (homelab.access, a web config)."""
        return self.secured and self.protocol == "http" and self.login


@dataclass(frozen=True)
class Role:
    """A role (module roles/<name>, group-data key <name>) and the inventory group that gets it."""

    name: str
    # The inventory group whose hosts run it; None: every host.
    group: str | None
    title: str
    listeners: tuple[Listener, ...] = ()
    # Scrape job name -> the listener Prometheus scrapes under that job.
    scrape: dict[str, str] = field(default_factory=dict)
    # Host data key choosing between the roles that share ``group`` (e.g. log_shipper).
    chosen_by: str | None = None
    note: str = ""
    # The listener serving CPU profiles (pprof_sampler's /debug/pprof/profile) when the role's
    # `profiling_hz` is on: what Alloy scrapes for Pyroscope (profile_scrapes).
    profiles: str | None = None

    def listener(self, name: str) -> Listener:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(f"role {self.name} has no listener {name!r}")


_HTTP = "http"

# In the order a host applies them: the base roles first; nginx before grafana (Grafana's site is
# checked against the installed nginx); the relay before Alertmanager, whose webhook points at it;
# Prometheus last, once what it scrapes exists.
ROLES: tuple[Role, ...] = (
    Role("base", None, "base packages"),
    Role("tuning", None, "tuning"),
    # Before every service serving TLS: the node's certificate and the CA (when pki.tls is on).
    Role("pki", None, "TLS certificates"),
    Role("node_exporter", None, "node_exporter", (Listener("metrics", "listen_port", secured=True),), {"node": "metrics"}),
    # After node_exporter, whose textfile directory it writes its drop counters to.
    Role("firewall", None, "firewall"),
    # nginx serves TLS itself, and fronts its exporter and mtail (roles/nginx), which admit callers
    # by their node certificate. With pki.tls on its site (Grafana's too) is on https_port and
    # listen_port answers only a redirect there.
    Role("nginx", "nginx", "nginx",
         (Listener(_HTTP, "listen_port", health="/healthz", secured=True, login=False, tls_setting="https_port"),
          Listener("redirect", "listen_port", health="/healthz", beside_tls=True, redirect=True),
          Listener("exporter", "exporter_port", secured=True, login=False, client_cert=True),
          Listener("mtail", "mtail_port", secured=True, login=False, client_cert=True)),
         {"nginx": "exporter", "mtail": "mtail"}),
    Role("grafana", "grafana", "Grafana", note="unix socket"),
    Role("loki", "loki", "Loki", (Listener(_HTTP, "listen_port", health="/ready", secured=True, login=False),),
         {"loki": _HTTP}),
    Role("toy_redis", "toy_redis", "toy-redis", (Listener("resp", "port", secured=True, protocol="resp"),
                                                 Listener("metrics", "metrics_port", secured=True),
                                                 Listener("resp_plain", "plain_port", protocol="resp", beside_tls=True)),
         {"toy-redis": "metrics"}, profiles="metrics"),
    Role("promtail", "log_shipper", "Promtail", (Listener(_HTTP, "listen_port"),), {"promtail": _HTTP},
         chosen_by="log_shipper"),
    Role("alloy", "log_shipper", "Alloy", (Listener(_HTTP, "listen_port"),), {"alloy": _HTTP},
         chosen_by="log_shipper"),
    Role("alert_relay", "alert_relay", "alert-relay", (Listener(_HTTP, "listen", health="/healthz", secured=True),),
         {"alert-relay": _HTTP}, profiles=_HTTP),
    Role("alertmanager", "alertmanager", "Alertmanager", (Listener(_HTTP, "listen_port", health="/-/healthy", secured=True),),
         {"alertmanager": _HTTP}),
    Role("blackbox", "blackbox", "blackbox_exporter", (Listener(_HTTP, "listen_port", secured=True),)),
    Role("prometheus", "prometheus", "Prometheus", (Listener(_HTTP, "listen_port", health="/-/healthy", secured=True),),
         {"prometheus": _HTTP}),
)
ROLE_BY_NAME = {role.name: role for role in ROLES}
# Parties outside the cluster that connect to it or that it connects to.
EXTERNAL = {"users": "Users' browsers", "clients": "Redis clients", "slack": "Slack API", "faxplus": "FAX.PLUS",
            "control": "Control machine"}
# The machine the deploy runs from: besides SSH to every node (roles/firewall), the services its
# commands and lab checks query (`homelab status`, `homelab maintenance`, tests/hosts/).
CONTROL = "control"


@dataclass(frozen=True)
class Flow:
    """One role (or external party) connecting to another's listener (None: not over a port)."""

    source: str
    target: str
    label: str
    listener: str | None = _HTTP


# Connections besides Prometheus's scrapes and blackbox's probes, which scrape_jobs() and
# health_probes() derive from ROLES.
FLOWS: tuple[Flow, ...] = (
    Flow("users", "nginx", "HTTP"),
    Flow("users", "nginx", "redirect to HTTPS", "redirect"),
    Flow("nginx", "grafana", "proxy over unix socket", None),
    Flow("grafana", "prometheus", "PromQL"),
    Flow("grafana", "loki", "LogQL"),
    Flow("grafana", "alertmanager", "alerts view"),
    Flow("clients", "toy_redis", "commands", "resp"),
    Flow("clients", "toy_redis", "commands without TLS", "resp_plain"),
    Flow("prometheus", "blackbox", "probe requests"),
    Flow("prometheus", "alertmanager", "firing alerts"),
    Flow("alertmanager", "alert_relay", "webhook"),
    Flow("faxplus", "alert_relay", "fax webhook"),
    Flow("alert_relay", "slack", "messages, files", None),
    Flow("promtail", "loki", "push logs"),
    Flow("alloy", "loki", "push logs"),
    Flow(CONTROL, "prometheus", "homelab status"),
    Flow(CONTROL, "alertmanager", "maintenance silences"),
    Flow(CONTROL, "nginx", "Grafana, burst checks"),
    Flow(CONTROL, "toy_redis", "redis-cli, lab checks", "resp"),
    Flow(CONTROL, "toy_redis", "lab checks", "resp_plain"),
    Flow(CONTROL, "toy_redis", "lab checks", "metrics"),
    Flow(CONTROL, "alert_relay", "lab checks"),
    Flow(CONTROL, "node_exporter", "lab checks", "metrics"),
    Flow(CONTROL, "nginx", "lab checks", "exporter"),
    Flow(CONTROL, "nginx", "lab checks", "mtail"),
    Flow(CONTROL, "nginx", "lab checks", "redirect"),
)


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where one host's service listens, as other hosts reach it."""

    host: str
    address: str
    port: int

    @property
    def instance(self) -> str:
        """The `instance` label: the host's name, so alerts read the same in the lab and the cluster."""
        return f"{self.host}:{self.port}"

    @property
    def netloc(self) -> str:
        """address:port, what a client connects to."""
        return f"{self.address}:{self.port}"

    def url(self, path: str = "", scheme: str = "http") -> str:
        return f"{scheme}://{self.netloc}{path}"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    role: str
    targets: tuple[Endpoint, ...]


@dataclass(frozen=True, order=True)
class HealthProbe:
    """An HTTP health check of one host's service, made by blackbox_exporter; of a redirect
    listener (Listener.redirect), that it answers with the redirect to https."""

    role: str
    endpoint: Endpoint
    path: str
    # "https" where the listener serves TLS on that host (Topology.serves_tls).
    scheme: str = "http"
    listener: str = _HTTP

    @property
    def redirect(self) -> bool:
        return ROLE_BY_NAME[self.role].listener(self.listener).redirect

    @property
    def url(self) -> str:
        return self.endpoint.url(self.path, self.scheme)

    @property
    def instance(self) -> str:
        """The URL with the host's name in place of its address, for the `instance` label."""
        return f"{self.scheme}://{self.endpoint.instance}{self.path}"


# The path Prometheus scrapes (its default metrics_path); every secured listener serves it.
METRICS_PATH = "/metrics"


@dataclass(frozen=True, order=True)
class TlsCheck:
    """blackbox's check of one secured listener serving metrics (scraped, or behind a login) of a
    host with pki.tls on: is its port open, and does what Prometheus scrapes answer over https with
    the cluster CA and blackbox's login (alert ScrapeTLSOrLoginFailing compares the two)."""

    role: str
    listener: str
    endpoint: Endpoint

    @property
    def url(self) -> str:
        return self.endpoint.url(METRICS_PATH, "https")


@dataclass(frozen=True, order=True)
class Inbound:
    """One port a host listens on, and who calls it: what the host's firewall lets in."""

    role: str
    listener: str
    port: int
    callers: tuple[str, ...]  # inventory hosts
    parties: tuple[str, ...]  # EXTERNAL parties (the control machine among them)


@dataclass(frozen=True, order=True)
class Connection:
    """A Flow resolved to hosts: who connects to whom, on which port (None: not over a port)."""

    source_host: str | None  # None: an external party
    source: str
    target_host: str | None
    target: str
    label: str
    port: int | None = None


def load_inventory(path: str | Path) -> Inventory:
    """An inventory file with its group_data/ folder, as `pyinfra <path> ...` loads it.

    Module-level lists of (name, data) are groups; group_data/<group>.py holds each group's data
    and group_data/all.py everyone's. Built without pyinfra_cli, whose import patches the process
    for gevent.
    """
    path = Path(path)

    def public(module_path: Path) -> dict[str, Any]:
        return {key: value for key, value in runpy.run_path(str(module_path)).items()
                if not key.startswith("_") and not isinstance(value, ModuleType)}

    group_data = {file.stem: public(file) for file in sorted((path.parent / "group_data").glob("*.py"))}
    groups = {name: members for name, members in public(path).items() if isinstance(members, list)}
    hosts = list({name: (name, data) for members in groups.values() for name, data in members}.values())
    return Inventory((hosts, group_data.get("all", {})),
                     **{group: (members, group_data.get(group, {})) for group, members in groups.items()})


def _answered_once(question: Callable[["Topology"], list]) -> Callable[["Topology"], list]:
    """A question about the whole inventory, worked out on first use: every host's roles ask them
    (each firewall its inbound flows, each restart its probes), and the inventory does not change."""
    @wraps(question)
    def answer(self: "Topology") -> list:
        if question.__name__ not in self._answers:
            self._answers[question.__name__] = tuple(question(self))
        return list(self._answers[question.__name__])
    return answer


class Topology:
    """Questions about one inventory; settings are validated once, on first use."""

    def __init__(self, inventory: Inventory):
        self._hosts = {member.name: member for member in inventory}
        self._settings: dict[tuple[str, str], BaseModel] = {}
        self._answers: dict[str, tuple] = {}

    @classmethod
    def load(cls, path: str | Path) -> "Topology":
        return cls(load_inventory(path))

    # --- hosts and roles --------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    def data(self, host: str, key: str, default: Any = None) -> Any:
        """Host ``host``'s inventory data ``key`` (its own, then its groups', then all's)."""
        return self._hosts[host].data.get(key, default)

    def groups(self, host: str) -> set[str]:
        return set(self._hosts[host].groups)

    def address(self, host: str) -> str:
        """The address other nodes reach ``host`` at: its ssh_hostname, else its inventory name."""
        return self.data(host, "ssh_hostname") or host

    def chosen(self, host: str, role: Role) -> str:
        """Which of the roles sharing ``role.group`` host data ``role.chosen_by`` picks."""
        from roles.promtail import DEFAULT_LOG_SHIPPER  # the one choice there is so far

        choices = [other.name for other in ROLES if other.chosen_by == role.chosen_by]
        value = self.data(host, role.chosen_by, DEFAULT_LOG_SHIPPER)
        if value not in choices:
            raise ConfigError(f"inventory data for {host}", role.chosen_by,
                              f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def runs(self, host: str, role: str) -> bool:
        """Whether a deploy applies ``role`` to ``host``."""
        spec = ROLE_BY_NAME[role]
        if spec.group is not None and spec.group not in self.groups(host):
            return False
        return spec.chosen_by is None or self.chosen(host, spec) == role

    def roles_of(self, host: str) -> list[str]:
        """The roles a deploy applies to ``host``, in the order it applies them."""
        return [role.name for role in ROLES if self.runs(host, role.name)]

    def hosts_of(self, role: str) -> list[str]:
        """The hosts a deploy applies ``role`` to, sorted by name."""
        return [host for host in self.hosts if self.runs(host, role)]

    def serving(self, role: str) -> list[str]:
        """Of hosts_of(role), those where the service will be running: a lab node skips Grafana
        Labs' packages it cannot fetch (roles.grafana_repo), and nothing there is scraped or probed."""
        from roles.grafana_repo import runs_on

        return [host for host in self.hosts_of(role) if runs_on(self._hosts[host], role)]

    # --- settings and endpoints ---------------------------------------------------------------

    def settings(self, host: str, role: str) -> BaseModel:
        """``role``'s validated Settings on ``host``: its defaults overridden by host data ``role``."""
        key = (host, role)
        if key not in self._settings:
            model = import_module(f"roles.{role}").Settings
            self._settings[key] = settings_from_data(host, role, model, self.data(host, role))
        return self._settings[key]

    def listeners(self, host: str, role: str) -> list[Listener]:
        """``role``'s listeners ``host`` serves: all but a beside_tls one without TLS or a port."""
        return [listener for listener in ROLE_BY_NAME[role].listeners if not listener.beside_tls or (
            self.settings(host, "pki").tls and getattr(self.settings(host, role), listener.setting) is not None)]

    def serves(self, host: str, role: str, listener: str) -> bool:
        return any(served.name == listener for served in self.listeners(host, role))

    def serves_tls(self, host: str, role: str, listener: str = _HTTP) -> bool:
        """Whether ``role``'s ``listener`` on ``host`` serves TLS (Listener.secured, with the host's pki.tls on)."""
        return ROLE_BY_NAME[role].listener(listener).secured and self.settings(host, "pki").tls

    def port(self, host: str, role: str, listener: str = _HTTP) -> int:
        spec = ROLE_BY_NAME[role].listener(listener)
        setting = spec.tls_setting if spec.tls_setting and self.settings(host, "pki").tls else spec.setting
        value = getattr(self.settings(host, role), setting)
        return port_of(value) if isinstance(value, str) else value

    def endpoint(self, role: str, host: str | None = None, listener: str = _HTTP) -> Endpoint:
        """Where ``role``'s ``listener`` is on ``host`` (default: the first host running the role)."""
        if host is None:
            hosts = self.hosts_of(role)
            if not hosts:
                group = ROLE_BY_NAME[role].group
                raise ConfigError("inventory", group, f"expected a host in inventory group {group!r} "
                                                      f"(another role connects to its {role})")
            host = hosts[0]
        return Endpoint(host, self.address(host), self.port(host, role, listener))

    def access(self, role: str, host: str | None = None, listener: str = _HTTP) -> "Access":
        """How the control machine reaches ``role``'s ``listener`` on ``host``: URL, CA, login (homelab.access)."""
        from homelab.access import access

        return access(self, role, host, listener)

    def endpoints(self, role: str, listener: str = _HTTP) -> list[Endpoint]:
        """``role``'s ``listener`` on every host serving it."""
        return [self.endpoint(role, host, listener) for host in self.serving(role) if self.serves(host, role, listener)]

    # --- who scrapes, probes and calls whom -------------------------------------------------

    @_answered_once
    def scrape_jobs(self) -> list[ScrapeJob]:
        """Prometheus's jobs: for each role's scraped listener, every host serving the role."""
        jobs = []
        for role in ROLES:
            for job, listener in role.scrape.items():
                targets = self.endpoints(role.name, listener)
                if targets:
                    jobs.append(ScrapeJob(job, role.name, tuple(targets)))
        return jobs

    @_answered_once
    def health_probes(self) -> list[HealthProbe]:
        """blackbox_exporter's checks: each health path of every host serving its role."""
        return sorted(
            HealthProbe(role.name, endpoint, listener.health,
                        "https" if self.serves_tls(endpoint.host, role.name, listener.name) else "http", listener.name)
            for role in ROLES for listener in role.listeners if listener.health
            for endpoint in self.endpoints(role.name, listener.name)
        )

    @_answered_once
    def tls_checks(self) -> list[TlsCheck]:
        """Every secured listener of every host serving it with pki.tls on, when a blackbox host
        exists to check them."""
        if not self.hosts_of("blackbox"):
            return []
        return sorted(TlsCheck(role.name, listener.name, endpoint)
                      for role in ROLES for listener in role.listeners
                      if listener.secured and listener.protocol == "http"
                      and (listener.login or listener.name in role.scrape.values())
                      for endpoint in self.endpoints(role.name, listener.name)
                      if self.settings(endpoint.host, "pki").tls)

    @_answered_once
    def flows(self) -> list[Connection]:
        """Every connection between hosts' roles and external parties, scrapes and probes included."""
        connections = []
        for flow in FLOWS:
            sources = [(None, flow.source)] if flow.source in EXTERNAL else [
                (host, flow.source) for host in self.hosts_of(flow.source)]
            targets = [(None, None)] if flow.target in EXTERNAL else [
                (host, self.port(host, flow.target, flow.listener) if flow.listener else None)
                for host in self.hosts_of(flow.target) if not flow.listener or self.serves(host, flow.target, flow.listener)]
            connections += [Connection(source_host, source, target_host, flow.target, flow.label, port)
                            for source_host, source in sources for target_host, port in targets]
        for prometheus in self.hosts_of("prometheus"):
            connections += [Connection(prometheus, "prometheus", target.host, job.role, "scrape", target.port)
                            for job in self.scrape_jobs() for target in job.targets]
        for prober in self.hosts_of("blackbox")[:1]:
            connections += [Connection(prober, "blackbox", probe.endpoint.host, probe.role,
                                       f"probe {probe.path}", probe.endpoint.port)
                            for probe in self.health_probes()]
            connections += [Connection(prober, "blackbox", check.endpoint.host, check.role, "TLS and login check",
                                       check.endpoint.port)
                            for check in self.tls_checks()]
        return connections + self.profile_scrapes()

    def profile_scrapes(self) -> list[Connection]:
        """Alloy's scrapes of CPU profiles: from each Alloy host whose settings name a `pyroscope_url`,
        of every service with `profiling_hz` on (on its Role.profiles listener)."""
        scrapes = []
        for alloy in self.hosts_of("alloy"):
            if self.settings(alloy, "alloy").pyroscope_url is None:
                continue
            for role in ROLES:
                for target in self.hosts_of(role.name) if role.profiles else ():
                    if self.settings(target, role.name).profiling_hz:
                        scrapes.append(Connection(alloy, "alloy", target, role.name, "CPU profiles",
                                                  self.port(target, role.name, role.profiles)))
        return scrapes

    def inbound(self, host: str) -> list[Inbound]:
        """Each port ``host``'s roles listen on, with the hosts and external parties whose
        connections in flows() reach it, so adding a caller to the inventory opens its ports."""
        connections = [connection for connection in self.flows() if connection.target_host == host]
        ports = []
        for role in self.roles_of(host):
            for listener in self.listeners(host, role):
                port = self.port(host, role, listener.name)
                calling = [connection for connection in connections
                           if connection.target == role and connection.port == port]
                ports.append(Inbound(
                    role, listener.name, port,
                    tuple(sorted({c.source_host for c in calling if c.source_host is not None})),
                    tuple(sorted({c.source for c in calling if c.source_host is None}))))
        return ports
