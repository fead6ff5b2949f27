"""A node firewall on every host: one nftables table, `inet homelab`, derived from the topology.

Each port the host's roles listen on accepts only the hosts and outside parties that call it in
homelab.topology's flows() (Topology.inbound); SSH accepts only the control machine (the address
this deploy connects from, unless group data `firewall.control_addresses` names it). Everything
else is dropped and counted in a named counter per port, which a systemd timer writes to
node_exporter's textfile directory (alert FirewallDropsOnServicePort). Callers other than the
control machine are limited per source: concurrent connections (`ct count`) and new connections
per second, against reconnect floods that would fill a service's accept queue.

A new ruleset is checked with `nft -c` on the node, then loaded atomically (one nft transaction
replaces the table; other tables, such as Docker's, are left alone) with a rollback armed: unless
the control machine opens a *new* SSH connection to the node and confirms within `rollback_after`,
a systemd timer puts the previous ruleset back. homelab-firewall.service loads the confirmed file
at boot, before the network is up.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket
from dataclasses import dataclass
from io import BytesIO

from pydantic import Field, IPvAnyNetwork
from pyinfra import host, logger
from pyinfra.api import deploy, operation
from pyinfra.facts.files import Sha1File
from pyinfra.facts.server import Command
from pyinfra.operations import files, python, server, systemd
from pyinfra.operations.util import any_changed

from homelab.config import ConfigError, StrictModel
from homelab.topology import CONTROL, Inbound, Topology
from homelab.types import Duration, seconds
from roles import fact_cache
from roles.common import checked_file, current_topology, render, role_settings, sha1
from roles.install import apt_packages

TABLE = "homelab"  # `inet homelab`: the one table this project owns on a node
RULESET_FILE = "/etc/homelab/firewall.nft"
STAGED_FILE = f"{RULESET_FILE}.staged"
PREVIOUS_FILE = f"{RULESET_FILE}.previous"
# sha1sum of the confirmed table as nft lists it without counters and set elements (which change
# as traffic flows), written at confirmation: a rule deleted or added by hand changes the listing.
LISTING_DIGEST_FILE = f"{RULESET_FILE}.listing.sha1"
LISTING = f"nft -s -t list table inet {TABLE}"
APPLY_SCRIPT = "/usr/local/sbin/homelab-firewall"
METRICS_SCRIPT = "/usr/local/sbin/homelab-firewall-metrics"
BOOT_UNIT = "homelab-firewall.service"
ROLLBACK_UNIT = "homelab-firewall-rollback"
METRICS_UNIT = "homelab-firewall-metrics"
METRICS_FILE_NAME = "homelab_firewall.prom"
METRIC = "homelab_firewall_dropped_packets_total"
# The table's comment carries this prefix and the ruleset's checksum, so a deploy sees whether the
# loaded table (not only the file) is the one it wants: a rollback or another ruleset is redone; and
# its listing is compared with the one confirmed (LISTING_DIGEST_FILE): a hand edit is redone too.
FINGERPRINT = "homelab-ops ruleset sha1"
LISTING_INTACT, LISTING_ALTERED = "listing-as-confirmed", "listing-changed"
# Two lines: the loaded table's fingerprint (empty without one), and whether its listing is the
# confirmed one. Every node runs it at every deploy: the shell cuts the table's comment line out and
# reads the digest itself (sed, head and cat cost ~4 ms of a node's CPU per deploy).
LOADED_STATE = "\n".join((
    f"listing=$({LISTING} 2>/dev/null)",
    f'comment=${{listing#*"\n\tcomment \\"{FINGERPRINT} "}}',
    'if [ "$comment" = "$listing" ]; then echo; else printf \'%s\\n\' "${comment%%\\"*}"; fi',
    f"confirmed=; [ -r {LISTING_DIGEST_FILE} ] && read -r confirmed < {LISTING_DIGEST_FILE}",
    f'if [ "$(printf \'%s\\n\' "$listing" | sha1sum)" = "$confirmed" ]; then echo {LISTING_INTACT}; '
    f"else echo {LISTING_ALTERED}; fi",
))
DEFAULT_SSH_PORT = 22  # pyinfra's, when host data `ssh_port` does not say


class OutsideCallers(StrictModel):
    """Networks each party outside the inventory (homelab.topology.EXTERNAL) calls from."""

    # nginx in front of Grafana, which asks for a login: the front door for the whole network.
    users: list[IPvAnyNetwork] = Field(default_factory=lambda: [ipaddress.ip_network("0.0.0.0/0"),
                                                                 ipaddress.ip_network("::/0")])
    # toy-redis's RESP port: name the application hosts that use it.
    clients: list[IPvAnyNetwork] = []
    # The relay's fax webhook: FAX.PLUS's sending addresses, once FAX.PLUS is set up to call it.
    faxplus: list[IPvAnyNetwork] = []


class Settings(StrictModel):
    """Group data key `firewall`."""

    # SSH and every port the control machine calls (homelab.topology.CONTROL's flows) accept these.
    # Empty: the address this deploy's SSH connection comes from, as each node sees it.
    control_addresses: list[IPvAnyNetwork] = []
    outside_callers: OutsideCallers = OutsideCallers()
    # Per source address and port, for every caller but the control machine (which has root on
    # the node anyway, and whose burst checks open thousands of connections on purpose).
    connections_per_source: int = Field(256, ge=1, le=100000)  # not a port: bounded like the rates below
    new_connections_per_second: int = Field(50, ge=1, le=100000)
    new_connections_burst: int = Field(100, ge=1, le=100000)
    # A loaded ruleset is rolled back unless the control machine reaches SSH anew within this.
    rollback_after: Duration = "60s"
    # How often the drop counters are written for node_exporter.
    metrics_every: Duration = "15s"


@dataclass(frozen=True)
class Sources:
    """Addresses split by family, as nft's `ip saddr` and `ip6 saddr` take them."""

    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()

    @classmethod
    def of(cls, networks) -> "Sources":
        found = sorted({ipaddress.ip_network(network, strict=False) for network in networks},
                       key=lambda network: (network.version, network))
        return cls(tuple(str(n) for n in found if n.version == 4), tuple(str(n) for n in found if n.version == 6))

    def __add__(self, other: "Sources") -> "Sources":
        return Sources.of([*self.v4, *self.v6, *other.v4, *other.v6])

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)


@dataclass(frozen=True)
class ServicePort:
    """One listening port in the ruleset, with its callers and its counters."""

    inbound: Inbound
    callers: Sources  # limited per source
    control: bool  # whether the control machine calls it (accepted without limits)

    @property
    def key(self) -> str:
        return f"{self.inbound.role}_{self.inbound.listener}"

    @property
    def dropped_counter(self) -> str:
        return f"dropped_{self.key}"

    @property
    def limited_counter(self) -> str:
        return f"limited_{self.key}"


def host_addresses(topology: Topology, name: str) -> list[str]:
    """The addresses ``name`` connects from: its inventory address, resolved if it is a name."""
    address = topology.address(name)
    try:
        return [str(ipaddress.ip_address(address))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)})
    except socket.gaierror as exc:
        raise ConfigError(f"inventory data for {name}", "ssh_hostname",
                          f"expected an address or a name this machine resolves, got {address!r} ({exc.strerror})") from None


def service_ports(topology: Topology, name: str, settings: Settings) -> list[ServicePort]:
    ports, seen = [], {}
    for inbound in topology.inbound(name):
        if inbound.port == 0:  # a listener its settings turn off (toy-redis's tls_port 0)
            continue
        if inbound.port in seen:
            raise ConfigError(f"inventory data for {name}", f"{inbound.role}",
                              f"port {inbound.port} is also {seen[inbound.port]}'s; expected one service per port")
        seen[inbound.port] = f"{inbound.role} {inbound.listener}"
        outside = [network for party in inbound.parties if party != CONTROL
                   for network in getattr(settings.outside_callers, party)]
        callers = Sources.of([address for caller in inbound.callers for address in host_addresses(topology, caller)]
                             + outside)
        ports.append(ServicePort(inbound, callers, CONTROL in inbound.parties))
    return ports


def counter_labels(ports: list[ServicePort], ssh_port: int) -> dict[str, dict[str, str]]:
    """Counter name -> the labels its metric carries (service "" for what is not a service port)."""
    labels = {"dropped_ssh": {"service": "ssh", "listener": "ssh", "port": str(ssh_port), "reason": "not_allowed"}}
    for port in ports:
        common = {"service": port.inbound.role, "listener": port.inbound.listener, "port": str(port.inbound.port)}
        labels[port.dropped_counter] = {**common, "reason": "not_allowed"}
        if port.callers:
            labels[port.limited_counter] = {**common, "reason": "flood"}
    labels["dropped_invalid"] = {"service": "", "listener": "", "port": "", "reason": "invalid"}
    labels["dropped_other"] = {"service": "", "listener": "", "port": "", "reason": "not_a_service_port"}
    return labels


def render_ruleset(topology: Topology, name: str, settings: Settings, control: Sources, ssh_port: int) -> str:
    """The ruleset file for host ``name``: loadable whether or not the table exists yet."""
    if not control:
        raise ConfigError(f"inventory data for {name}", "firewall.control_addresses",
                          "expected at least one address of the control machine (SSH would accept nobody)")
    ports = service_ports(topology, name, settings)
    context = dict(table=TABLE, ssh_port=ssh_port, control=control, ports=ports, settings=settings,
                   counters=list(counter_labels(ports, ssh_port)), fingerprint=None)
    body = render("firewall/ruleset.nft.j2", **context)
    return render("firewall/ruleset.nft.j2", **{**context, "fingerprint": f"{FINGERPRINT} {sha1(body)}"})


def fingerprint_of(ruleset: str) -> str:
    for line in ruleset.splitlines():
        if FINGERPRINT in line:
            return line.split(FINGERPRINT, 1)[1].strip().strip('"').strip()
    raise ValueError("ruleset without a fingerprint")


def render_metrics_script(labels: dict[str, dict[str, str]], textfile_directory: str) -> str:
    """The metrics script: an awk program that knows each counter's labels, in a shell script."""
    def awk_string(text: str) -> str:  # awk string literals escape as JSON's do (ASCII only here)
        return json.dumps(text)

    def label_set(labels_of: dict[str, str]) -> str:  # Prometheus's text format: \\, \" and \n escaped
        return ",".join(f'{key}={json.dumps(value)}' for key, value in sorted(labels_of.items()))

    program = "\n".join([
        "BEGIN {",
        f'    print {awk_string(f"# HELP {METRIC} Packets the node firewall dropped or refused, by the service port they were for.")}',
        f'    print {awk_string(f"# TYPE {METRIC} counter")}',
        *(f"    labels[{awk_string(name)}] = {awk_string(label_set(labels_of))}" for name, labels_of in labels.items()),
        "}",
        '$1 == "counter" { name = $2 }',
        '$1 == "packets" && (name in labels) { print ' + awk_string(METRIC + "{") + ' labels[name] "} " $2; name = "" }',
    ]) + "\n"
    return render("firewall/homelab-firewall-metrics.sh.j2", table=TABLE, metric=METRIC, program=shlex.quote(program),
                  output=shlex.quote(f"{textfile_directory.rstrip('/')}/{METRICS_FILE_NAME}"))


def control_sources(settings: Settings) -> Sources:
    """The control machine's addresses: the setting, else where this deploy connects from."""
    if settings.control_addresses:
        return Sources.of(settings.control_addresses)
    connection = (host.get_fact(Command, "echo ${SSH_CONNECTION:-}") or "").split()
    if not connection:
        raise ConfigError(f"inventory data for {host.name}", "firewall.control_addresses",
                          "expected the control machine's addresses: this deploy does not come over SSH, "
                          "so they cannot be derived")
    return Sources.of([connection[0]])


@operation()
def ruleset(content: str, rollback_after: str):
    """Load ``content`` as the node's firewall unless both the file and the loaded table are it.

    + content: the rendered ruleset
    + rollback_after: how long the node waits for a confirmation before restoring the previous one
    """
    wanted = fingerprint_of(content)
    fact_cache.want(Command, LOADED_STATE)  # asked after the file's hash: read with it
    if (host.get_fact(Sha1File, path=RULESET_FILE) == sha1(content)
            and (host.get_fact(Command, LOADED_STATE) or "").split() == [wanted, LISTING_INTACT]):
        host.noop(f"firewall ruleset {wanted[:12]} is loaded as confirmed")
        return
    yield from files.put._inner(src=BytesIO(content.encode()), dest=STAGED_FILE, mode="0600")
    yield f"{APPLY_SCRIPT} apply {shlex.quote(STAGED_FILE)} {int(seconds(rollback_after))}"


def ssh_answers_anew(state, host, address: str, port: int, timeout_s: float = 10) -> bool:
    """Open a new TCP connection to the node's SSH from this (the control) machine and read its
    banner: the deploy's own connection survives any ruleset (established), a new one must not.
    False fails the operation, so the confirmation never comes and the node rolls back."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            banner = connection.recv(64)
        if banner.startswith(b"SSH-"):
            return True
        problem = f"answered {banner[:20]!r}, not SSH"
    except OSError as exc:
        problem = f"does not answer ({exc})"
    host.log_styled(f"firewall: the new ruleset shuts this machine out: SSH at {address}:{port} {problem}; "
                    f"the node puts the previous ruleset back by itself", fg="red", log_func=logger.error)
    return False


@deploy("firewall")
def apply() -> None:
    settings = role_settings("firewall", Settings)
    topology = current_topology()
    ssh_port = int(host.data.get("ssh_port") or DEFAULT_SSH_PORT)
    content = render_ruleset(topology, host.name, settings, control_sources(settings), ssh_port)
    labels = counter_labels(service_ports(topology, host.name, settings), ssh_port)
    textfile_directory = topology.settings(host.name, "node_exporter").textfile_directory

    apt_packages("Install nftables", ["nftables"])
    files.directory(name="Directory /etc/homelab", path="/etc/homelab", mode="0755")
    checked_file(name=f"Ruleset swapper {APPLY_SCRIPT}", dest=APPLY_SCRIPT, mode="0755",
                 content=render("firewall/homelab-firewall.sh.j2", table=TABLE, live=RULESET_FILE,
                                previous=PREVIOUS_FILE, rollback_unit=ROLLBACK_UNIT,
                                listing=LISTING, listing_digest=LISTING_DIGEST_FILE))
    boot_unit = checked_file(name=f"Load the firewall at boot: {BOOT_UNIT}", dest=f"/etc/systemd/system/{BOOT_UNIT}",
                             content=render("firewall/homelab-firewall.service.j2", live=RULESET_FILE))

    loaded = ruleset(name=f"Firewall ruleset (table inet {TABLE})", content=content,
                     rollback_after=settings.rollback_after)
    python.call(name="SSH from this machine still opens after the new ruleset", function=ssh_answers_anew,
                address=topology.address(host.name), port=ssh_port, _if=loaded.did_change)
    server.shell(name="Confirm the new ruleset (the rollback is called off)", commands=[f"{APPLY_SCRIPT} confirm"],
                 _if=loaded.did_change)
    systemd.daemon_reload(name=f"Reload systemd for {BOOT_UNIT}", _if=boot_unit.did_change)
    systemd.service(name=f"{BOOT_UNIT} enabled", service=BOOT_UNIT, running=True, enabled=True)

    metrics_script = checked_file(name=f"Drop counters to node_exporter: {METRICS_SCRIPT}", dest=METRICS_SCRIPT,
                                  mode="0755", content=render_metrics_script(labels, textfile_directory),
                                  check="sh -n {staged}")
    service_unit, timer_unit = (
        checked_file(name=f"{METRICS_UNIT}.{kind}", dest=f"/etc/systemd/system/{METRICS_UNIT}.{kind}",
                     content=render(f"firewall/{METRICS_UNIT}.{kind}.j2", script=METRICS_SCRIPT,
                                    every=settings.metrics_every))
        for kind in ("service", "timer"))
    systemd.daemon_reload(name=f"Reload systemd for {METRICS_UNIT}",
                          _if=any_changed(service_unit, timer_unit))
    systemd.service(name=f"{METRICS_UNIT}.timer enabled and running", service=f"{METRICS_UNIT}.timer",
                    running=True, enabled=True)
    systemd.service(name=f"Restart {METRICS_UNIT}.timer for its new schedule", service=f"{METRICS_UNIT}.timer",
                    restarted=True, _if=timer_unit.did_change)
    # The file is there at once (no gap in the metric after a deploy), not only at the next tick.
    server.shell(name=f"Write the drop counters now ({METRICS_UNIT})",
                 commands=[f"systemctl start {METRICS_UNIT}.service"],
                 _if=any_changed(metrics_script, service_unit, loaded))
