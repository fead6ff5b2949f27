"""Prometheus on the prometheus group: what it scrapes comes from the inventory, rules from alerts/.

Every scrape target is derived from the pyinfra inventory: node_exporter on every host, and each
component's exporter on the hosts of the group that runs it (EXPORTERS), so adding a host to a
group adds its targets and nothing is listed by hand. Prometheus connects to a host's address
(its ssh_hostname) while the `instance` label names the host (worker-node-12:8080), so alerts and
dashboards read the same in the lab and on the real cluster. The blackbox probes come from the
blackbox group's data (roles/blackbox) and are scraped through the first blackbox host.

Rule files are every alerts/generated/*.rules.yml, each checked with `promtool check rules`
before it is swapped in; the config is swapped only after `promtool check config` (which also
loads the rules) passes. Config or rule changes reload Prometheus; changed flags
(/etc/default/prometheus: retention, listen port) restart it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator
from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.inventory import Inventory
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, systemd

from homelab.alerts.render import require_current_rules
from homelab.config import ConfigError, FieldError, StrictModel, model_from_data
from roles.common import REPO_ROOT, checked_file, render, role_settings
from roles.grafana_repo import runs_on
from roles.install import Install, install_packages
from roles.promtail import DEFAULT_LOG_SHIPPER
from homelab.types import ByteSize, Duration, Port, seconds

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
CONFIG_CHECK = "promtool check config {staged}"
RULES_CHECK = "promtool check rules {staged}"


class Settings(StrictModel):
    """Group data key `prometheus`."""

    install: Install = Install()
    listen_port: int = Field(9090, ge=1, le=65535)
    scrape_interval: Duration = "15s"
    scrape_timeout: Duration = "10s"
    evaluation_interval: Duration = "15s"
    retention_time: Duration = "15d"
    # e.g. "20GB"; the oldest blocks go first once the TSDB is larger (None: no size limit).
    retention_size: ByteSize | None = None

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> "Settings":
        if seconds(self.scrape_timeout) > seconds(self.scrape_interval):
            raise FieldError("scrape_timeout", f"expected at most scrape_interval ({self.scrape_interval}),"
                                               f" got {self.scrape_timeout!r}")
        return self


@dataclass(frozen=True)
class Exporter:
    """A scrape job for a component running on the hosts of an inventory group."""

    job: str
    # None: every host in the inventory.
    group: str | None
    # Where the serving role's group data keeps its port, and the port when it does not say.
    data_key: str
    port_key: str
    default_port: int
    # Only hosts whose `log_shipper` data names this shipper (promtail or alloy) run it.
    log_shipper: str | None = None


EXPORTERS = [
    Exporter("node", None, "node_exporter", "listen_port", 9100),
    Exporter("prometheus", "prometheus", "prometheus", "listen_port", 9090),
    Exporter("alertmanager", "alertmanager", "alertmanager", "listen_port", 9093),
    Exporter("toy-redis", "toy_redis", "toy_redis", "metrics_port", 8080),
    Exporter("nginx", "nginx", "nginx", "exporter_port", 9113),
    Exporter("mtail", "nginx", "nginx", "mtail_port", 3903),
    # The relay's config names its listen address as host:port.
    Exporter("alert-relay", "alert_relay", "alert_relay", "listen", 9095),
    Exporter("loki", "loki", "loki", "listen_port", 3100),
    Exporter("promtail", "log_shipper", "promtail", "listen_port", 9080, log_shipper="promtail"),
    Exporter("alloy", "log_shipper", "alloy", "listen_port", 12345, log_shipper="alloy"),
]
PROBE_JOB = "blackbox"


@dataclass(frozen=True, order=True)
class Target:
    # What alerts and dashboards show: host name and port, or a probed URL with the host name.
    instance: str
    # What Prometheus connects to (or, for a probe, the URL the exporter probes).
    address: str
    module: str | None = None


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    targets: list[Target]


def host_address(member) -> str:
    """The address other nodes reach a host at: its ssh_hostname, else its inventory name."""
    return member.data.get("ssh_hostname") or member.name


def service_port(member, data_key: str, port_key: str, default: int) -> int:
    """The port a role listens on for ``member``, from that host's data for the role."""
    value = (member.data.get(data_key) or {}).get(port_key, default)
    # "0.0.0.0:9095" -> 9095
    return int(str(value).rsplit(":", 1)[-1])


def probed_hosts(inv: Inventory, group: str, where: str) -> list:
    # A typo in a probe's group would otherwise silently probe nothing.
    members = inv.get_group(group, None)
    if members is None:
        raise ConfigError(where, "group", f"no inventory group {group!r}")
    return [member for member in members if runs_on(member, group)]


def _unique(targets: list[Target]) -> list[Target]:
    # A host in two groups that both carry a job (or listed twice) is still scraped once.
    return sorted(set(targets))


def exporter_jobs(inv: Inventory) -> list[ScrapeJob]:
    jobs = []
    for exporter in EXPORTERS:
        targets = []
        members = list(inv) if exporter.group is None else inv.get_group(exporter.group, [])
        if exporter.log_shipper:
            members = [m for m in members if m.data.get("log_shipper", DEFAULT_LOG_SHIPPER) == exporter.log_shipper]
        for member in [m for m in members if runs_on(m, exporter.data_key)]:
            port = service_port(member, exporter.data_key, exporter.port_key, exporter.default_port)
            targets.append(Target(instance=f"{member.name}:{port}", address=f"{host_address(member)}:{port}"))
        if targets:
            jobs.append(ScrapeJob(exporter.job, _unique(targets)))
    return jobs


def blackbox_settings(inv: Inventory):
    """The first blackbox host and its validated settings, or (None, None) without one."""
    # Imported here: roles.blackbox itself imports this package (for Duration).
    from roles.blackbox import Settings as BlackboxSettings

    members = inv.get_group("blackbox", [])
    if not members:
        return None, None
    exporter = members[0]
    where = f"inventory data for {exporter.name}"
    try:
        settings = model_from_data(where, BlackboxSettings, exporter.data.get("blackbox"))
    except ConfigError as exc:
        raise ConfigError(exc.file, f"blackbox.{exc.key}" if exc.key else "blackbox", exc.expected) from None
    return exporter, settings


def probe_job(inv: Inventory) -> tuple[ScrapeJob | None, str | None]:
    """The blackbox job's targets (one per probe and host) and the exporter's host:port."""
    exporter, settings = blackbox_settings(inv)
    if exporter is None or not settings.probes:
        return None, None
    targets = []
    for index, probe in enumerate(settings.probes):
        where = f"inventory data for {exporter.name}: blackbox.probes.{index}"
        for member in probed_hosts(inv, probe.group, where):
            targets.append(Target(
                instance=probe.url.replace("{host}", member.name),
                address=probe.url.replace("{host}", host_address(member)),
                module=probe.module,
            ))
    return ScrapeJob(PROBE_JOB, _unique(targets)), f"{host_address(exporter)}:{settings.listen_port}"


def alertmanager_addresses(inv: Inventory) -> list[str]:
    return sorted({
        f"{host_address(member)}:{service_port(member, 'alertmanager', 'listen_port', 9093)}"
        for member in inv.get_group("alertmanager", [])
    })


def render_config(settings: Settings, inv: Inventory, rules_dir: str = RULES_DIR) -> str:
    probes, blackbox_address = probe_job(inv)
    return render(
        "prometheus/prometheus.yml.j2",
        settings=settings,
        jobs=exporter_jobs(inv),
        probes=probes,
        blackbox_address=blackbox_address,
        alertmanagers=alertmanager_addresses(inv),
        rule_files=f"{rules_dir}/{RULES_GLOB}",
    )


def render_defaults(settings: Settings) -> str:
    return render("prometheus/prometheus.default.j2", settings=settings, config_file=CONFIG_FILE,
                  storage_path=STORAGE_PATH)


def rule_files(thresholds_file: str | Path = THRESHOLDS_FILE) -> dict[str, str]:
    """name -> content of the generated rule files, once they are known to be current.

    An invalid thresholds file, or generated rules not re-rendered after it changed, stops the
    run with one line before any host is touched.
    """
    thresholds = Path(thresholds_file)
    if not thresholds.is_absolute():
        thresholds = REPO_ROOT / thresholds
    return require_current_rules(thresholds, RULES_SOURCE)


@deploy("prometheus")
def apply() -> None:
    settings = role_settings("prometheus", Settings)
    # Rendered before anything is installed: a bad inventory stops the run with no change.
    config_text = render_config(settings, inventory)
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

    config = checked_file(name=f"Scrape config {CONFIG_FILE}", dest=CONFIG_FILE, content=config_text,
                          check=CONFIG_CHECK)
    flags = checked_file(name=f"Prometheus flags in {DEFAULTS_FILE}", dest=DEFAULTS_FILE,
                         content=render_defaults(settings))
    systemd.service(name=f"{SERVICE} enabled and running", service=SERVICE, running=True, enabled=True)
    # Flags (retention, listen address) are read only at start.
    systemd.service(name=f"Restart {SERVICE} for new flags", service=SERVICE, restarted=True,
                    _if=flags.did_change)
    # Config and rules are re-read on reload (SIGHUP), which keeps the TSDB head in memory.
    changes = [config, *changed_rules]
    systemd.service(
        name=f"Reload {SERVICE} for new config or rules", service=SERVICE, reloaded=True,
        _if=lambda: any(op.did_change() for op in changes) and not flags.did_change(),
    )

