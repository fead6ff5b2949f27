"""Prometheus on the prometheus group: what it scrapes comes from the topology, rules from alerts/.

Every scrape target, health probe and Alertmanager address comes from homelab.topology: each
role's scraped port on every host that runs it, so adding a host to a group adds its targets and
nothing is listed by hand. Prometheus connects to a host's address (its ssh_hostname) while the
`instance` label names the host (e.g. worker-node-12:<metrics port>), so alerts and dashboards read
the same in the lab and on the real cluster. The health probes are sent through the first
blackbox host with its `health_module`.

Rule files are every alerts/generated/*.rules.yml, each checked with `promtool check rules`
before it is swapped in; the config is swapped only after `promtool check config` (which also
loads the rules) passes. Config or rule changes reload Prometheus; changed flags
(/etc/default/prometheus: retention, listen port) restart it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files

from homelab.alerts.catalog import CHECK_LOGIN, CHECK_PORT, TLS_CHECK_JOB
from homelab.alerts.render import load_thresholds, require_current_rules
from homelab.config import ConfigError, FieldError, StrictModel
from homelab.topology import ROLE_BY_NAME, Topology
from homelab.types import ByteSize, Duration, Port, seconds
from roles.common import REPO_ROOT, checked_file, current_topology, keep_running, render, role_settings
from roles.install import Install, install_packages
from roles.pki.web import Client, client, password_file, web_config

PACKAGE = "prometheus"
SERVICE = "prometheus"
CONFIG_FILE = "/etc/prometheus/prometheus.yml"
DEFAULTS_FILE = "/etc/default/prometheus"
RULES_DIR = "/etc/prometheus/rules"
RULES_SOURCE = REPO_ROOT / "alerts" / "generated"
THRESHOLDS_FILE = "alerts/thresholds.yaml"
RULES_GLOB = "*.rules.yml"
# Debian's default storage path; kept so an existing TSDB survives the switch to managed flags.
STORAGE_PATH = "/var/lib/prometheus/metrics2/"
# Where the admin API's TSDB snapshots appear (homelab.backup copies one, then removes it).
SNAPSHOTS_DIR = f"{STORAGE_PATH}snapshots"
CONFIG_CHECK = "promtool check config {staged}"
# The job of blackbox_exporter's health probes (the Probe* alerts select it).
PROBE_JOB = "blackbox"
RULES_CHECK = "promtool check rules {staged}"
# The package's service runs as this user, which is also its login to the endpoints it scrapes.
SERVICE_USER = "prometheus"
# Its web password (homelab.access), for scrapes and alerts sent over TLS.
WEB_PASSWORD_FILE = "/etc/prometheus/web-password"


class Settings(StrictModel):
    """Group data key `prometheus`."""

    install: Install = Install()
    listen_port: Port = 9090
    scrape_interval: Duration = "15s"
    scrape_timeout: Duration = "10s"
    evaluation_interval: Duration = "15s"
    retention_time: Duration = "15d"
    # e.g. "20GB"; the oldest blocks go first once the TSDB is larger (None: no size limit).
    retention_size: ByteSize | None = None
    # The admin API (TSDB snapshots for `homelab backup`; also series deletion). Prometheus cannot
    # limit it to one client: it is for the control machine, which the web login and the firewall
    # in front of listen_port are to ensure (docs/backups.md, "The admin API").
    admin_api: bool = True

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> "Settings":
        if seconds(self.scrape_timeout) > seconds(self.scrape_interval):
            raise FieldError("scrape_timeout", f"expected at most scrape_interval ({self.scrape_interval}),"
                                               f" got {self.scrape_timeout!r}")
        return self


def _one_client(topology: Topology, role: str, listener: str, hosts: list[str]) -> Client:
    """How Prometheus reaches ``role``'s ``listener`` on ``hosts``: one way for all, as one job or
    Alertmanager list has one scheme."""
    clients = {client(topology, role, host_name, listener, SERVICE_USER, WEB_PASSWORD_FILE) for host_name in hosts}
    if not clients:  # nothing to reach
        return Client("http")
    if len(clients) > 1:
        raise ConfigError("inventory", "pki.tls", f"expected the same on every host running {role} "
                                                  f"({', '.join(hosts)}): one scrape job has one scheme")
    return clients.pop()


def render_config(settings: Settings, topology: Topology, rules_dir: str = RULES_DIR) -> str:
    from roles.blackbox import redirect_module, tls_module

    probes = topology.health_probes()
    blackbox_hosts = topology.hosts_of("blackbox")
    blackbox = topology.settings(blackbox_hosts[0], "blackbox") if blackbox_hosts else None
    jobs = [(job, _one_client(topology, job.role, ROLE_BY_NAME[job.role].scrape[job.name],
                              [target.host for target in job.targets]))
            for job in topology.scrape_jobs()]
    # Each probe: the URL blackbox fetches (https for a secured listener) and the module doing it.
    def module(probe) -> str:
        if probe.redirect:
            return redirect_module(blackbox.health_module)
        return tls_module(blackbox.health_module) if probe.scheme == "https" else blackbox.health_module

    probe_targets = [(probe.url, {"instance": probe.instance, "module": module(probe)})
                     for probe in (probes if blackbox else [])]
    alertmanagers = topology.endpoints("alertmanager")
    return render(
        "prometheus/prometheus.yml.j2",
        settings=settings,
        jobs=jobs,
        probe_job=PROBE_JOB,
        probes=probe_targets,
        tls_check_job=TLS_CHECK_JOB,
        tls_checks=tls_check_targets(topology, blackbox.health_module) if blackbox else [],
        blackbox_address=topology.endpoint("blackbox").netloc if blackbox else None,
        blackbox_client=_one_client(topology, "blackbox", "http", blackbox_hosts[:1]) if blackbox else None,
        alertmanagers=[endpoint.netloc for endpoint in alertmanagers],
        alertmanager_client=_one_client(topology, "alertmanager", "http", [e.host for e in alertmanagers]),
        rule_files=f"{rules_dir}/{RULES_GLOB}",
    )


def tls_check_targets(topology: Topology, health_module: str) -> list[tuple[str, dict[str, str]]]:
    """blackbox's two probes of each secured listener (Topology.tls_checks): what Prometheus
    scrapes, over https with the cluster CA and blackbox's login (or its node certificate, where
    the listener admits callers by certificate); and a plain TCP connect, which tells a listener
    that is down from one refusing TLS (ScrapeTLSOrLoginFailing)."""
    from roles.blackbox import PORT_MODULE, cert_module, tls_module

    targets = []
    for check in topology.tls_checks():
        labels = {"instance": check.endpoint.instance, "service": check.role, "listener": check.listener}
        by_cert = ROLE_BY_NAME[check.role].listener(check.listener).client_cert
        module = cert_module(health_module) if by_cert else tls_module(health_module)
        targets += [(check.url, {**labels, "check": CHECK_LOGIN, "module": module}),
                    (check.endpoint.netloc, {**labels, "check": CHECK_PORT, "module": PORT_MODULE})]
    return targets


def render_defaults(settings: Settings, web_flags: list[str] = ()) -> str:
    return render("prometheus/prometheus.default.j2", settings=settings, config_file=CONFIG_FILE,
                  storage_path=STORAGE_PATH, web_flags=web_flags)


def _thresholds_path(thresholds_file: str | Path) -> Path:
    thresholds = Path(thresholds_file)
    return thresholds if thresholds.is_absolute() else REPO_ROOT / thresholds


def rule_files(thresholds_file: str | Path = THRESHOLDS_FILE) -> dict[str, str]:
    """name -> content of the generated rule files, once they are known to be current.

    An invalid thresholds file, or generated rules not re-rendered after it changed, stops the
    run with one line before any host is touched.
    """
    return require_current_rules(_thresholds_path(thresholds_file), RULES_SOURCE)


def check_samples_stay_fresh(settings: Settings, thresholds_file: str | Path = THRESHOLDS_FILE) -> None:
    """ScrapeTLSOrLoginFailing ignores samples older than its fresh_within (leftovers of targets no
    longer scraped): a live target's latest sample, up to a scrape interval plus its timeout old,
    must never be that old, or a real failure would go unreported."""
    alert = load_thresholds(_thresholds_path(thresholds_file)).alerts.ScrapeTLSOrLoginFailing
    oldest = seconds(settings.scrape_interval) + seconds(settings.scrape_timeout)
    if alert.enabled and oldest >= seconds(alert.fresh_within):
        raise ConfigError("inventory", "prometheus.scrape_interval",
                          f"expected scrape_interval + scrape_timeout below {alert.name}'s fresh_within "
                          f"({alert.fresh_within}, {thresholds_file}), got {settings.scrape_interval} + "
                          f"{settings.scrape_timeout}")


@deploy("prometheus")
def apply() -> None:
    settings = role_settings("prometheus", Settings)
    # Rendered before anything is installed: a bad inventory stops the run with no change.
    config_text = render_config(settings, current_topology())
    check_samples_stay_fresh(settings, host.data.get("thresholds_file", THRESHOLDS_FILE))
    install_packages("prometheus", [PACKAGE], settings.install)

    files.directory(name=f"Rules folder {RULES_DIR}", path=RULES_DIR, mode="0755")
    wanted = rule_files(host.data.get("thresholds_file", THRESHOLDS_FILE))
    changed_rules = [
        checked_file(name=f"Rule file {name}", dest=f"{RULES_DIR}/{name}", content=content, check=RULES_CHECK)
        for name, content in wanted.items()
    ]
    present = host.get_fact(FindFiles, path=RULES_DIR, maxdepth=1, fname=RULES_GLOB) or []
    for stale in sorted(set(present) - {f"{RULES_DIR}/{name}" for name in wanted}):
        changed_rules.append(files.file(name=f"Remove rule file no longer generated: {stale}",
                                        path=stale, present=False))

    web_flags = web_config("prometheus", SERVICE_USER)
    if current_topology().settings(host.name, "pki").tls:
        # Its login to the TLS endpoints it scrapes, before the config that names the file is checked.
        password_file(SERVICE_USER, WEB_PASSWORD_FILE, SERVICE_USER)
    config = checked_file(name=f"Scrape config {CONFIG_FILE}", dest=CONFIG_FILE, content=config_text,
                          check=CONFIG_CHECK)
    flags = checked_file(name=f"Prometheus flags in {DEFAULTS_FILE}", dest=DEFAULTS_FILE,
                         content=render_defaults(settings, web_flags))
    keep_running(SERVICE, "prometheus", restart_on=(flags,), reload_on=(config, *changed_rules))
    if not current_topology().settings(host.name, "pki").tls:
        # Once the config without TLS is in force: no password lingers unused.
        files.file(name=f"No web password file {WEB_PASSWORD_FILE} with pki.tls off", path=WEB_PASSWORD_FILE,
                   present=False)
