"""`homelab-diagram`: docs/architecture.md, a Mermaid diagram of nodes, roles, ports and data flows.

Generated from an inventory's groups (inventory/homelab.py by default) and the ports set in
inventory/group_data/, so moving a role to another host or changing a port changes the diagram.
`homelab-diagram --check` fails when the committed file is stale; tests/test_diagram.py runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "homelab.py"
OUTPUT = REPO / "docs" / "architecture.md"
EVERY_HOST = "every host"


@dataclass(frozen=True)
class Port:
    """A port a role listens on: its group-data key (under the role's data key) and default."""

    purpose: str
    data_key: str
    port_key: str
    default: int


@dataclass(frozen=True)
class Role:
    group: str  # inventory group, or EVERY_HOST
    title: str
    ports: tuple[Port, ...] = ()
    note: str = ""

    @property
    def key(self) -> str:
        return "node_exporter" if self.group == EVERY_HOST else self.group


# The roles deploys/all.py applies, in the order they are drawn inside a node.
ROLES = (
    Role("nginx", "nginx", (Port("HTTP", "grafana", "http_port", 80), Port("exporter", "nginx", "exporter_port", 9113),
                            Port("mtail", "nginx", "mtail_port", 3903))),
    Role("grafana", "Grafana", note="unix socket"),
    Role("loki", "Loki", (Port("HTTP", "loki", "listen_port", 3100),)),
    Role("toy_redis", "toy-redis", (Port("RESP", "toy_redis", "port", 6379),
                                    Port("metrics", "toy_redis", "metrics_port", 8080))),
    Role("prometheus", "Prometheus", (Port("HTTP", "prometheus", "listen_port", 9090),)),
    Role("blackbox", "blackbox_exporter", (Port("HTTP", "blackbox", "listen_port", 9115),)),
    Role("alertmanager", "Alertmanager", (Port("HTTP", "alertmanager", "listen_port", 9093),)),
    Role("alert_relay", "alert-relay", (Port("HTTP", "alert_relay", "listen", 9095),)),
    Role(EVERY_HOST, "node_exporter", (Port("metrics", "node_exporter", "listen_port", 9100),)),
)
# The log shipper group runs Promtail or Alloy, chosen by group data `log_shipper`.
LOG_SHIPPERS = {
    "promtail": Role("log_shipper", "Promtail", (Port("HTTP", "promtail", "listen_port", 9080),)),
    "alloy": Role("log_shipper", "Alloy", (Port("HTTP", "alloy", "listen_port", 12345),)),
}
EXTERNAL = {
    "users": "Users' browsers",
    "clients": "Redis clients",
    "slack": "Slack API",
    "faxplus": "FAX.PLUS",
}


@dataclass(frozen=True)
class Flow:
    """Data moving from one role (or external party) to another; {port} names the target's port."""

    source: str
    target: str
    label: str
    port: str = ""  # purpose of the target role's port shown in the label


FLOWS = (
    Flow("users", "nginx", "HTTP", "HTTP"),
    Flow("nginx", "grafana", "proxy over unix socket"),
    Flow("grafana", "prometheus", "PromQL", "HTTP"),
    Flow("grafana", "loki", "LogQL", "HTTP"),
    Flow("grafana", "alertmanager", "alerts view", "HTTP"),
    Flow("clients", "toy_redis", "commands", "RESP"),
    Flow("prometheus", EVERY_HOST, "scrape", "metrics"),
    Flow("prometheus", "toy_redis", "scrape", "metrics"),
    Flow("prometheus", "nginx", "scrape", "exporter"),
    Flow("prometheus", "nginx", "scrape", "mtail"),
    Flow("prometheus", "blackbox", "probe requests", "HTTP"),
    Flow("prometheus", "alert_relay", "scrape", "HTTP"),
    Flow("prometheus", "alertmanager", "firing alerts", "HTTP"),
    Flow("alertmanager", "alert_relay", "webhook", "HTTP"),
    Flow("faxplus", "alert_relay", "fax webhook", "HTTP"),
    Flow("alert_relay", "slack", "messages, files"),
    Flow("log_shipper", "loki", "push logs", "HTTP"),
)


def inventory_groups(path: Path) -> dict[str, set[str]]:
    """host name -> inventory groups, read the way pyinfra reads an inventory file."""
    hosts: dict[str, set[str]] = {}
    for group, members in runpy.run_path(str(path)).items():
        if group.startswith("_") or not isinstance(members, list):
            continue
        for name, _data in members:
            hosts.setdefault(name, set()).add(group)
    return hosts


def group_data(inventory: Path) -> dict[str, dict]:
    """group name -> its variables from inventory/group_data/<group>.py (all.py as "all")."""
    folder = inventory.parent / "group_data"
    data = {}
    for path in sorted(folder.glob("*.py")):
        data[path.stem] = {key: value for key, value in runpy.run_path(str(path)).items() if not key.startswith("_")}
    return data


class Cluster:
    def __init__(self, inventory: Path):
        self.hosts = inventory_groups(inventory)
        self.data = group_data(inventory)

    def lookup(self, host: str, key: str, default=None):
        """A group-data variable as pyinfra resolves it for ``host``: its groups first, then all."""
        for group in sorted(self.hosts[host]):
            if key in self.data.get(group, {}):
                return self.data[group][key]
        return self.data.get("all", {}).get(key, default)

    def roles(self) -> list[Role]:
        shipper_hosts = self.members("log_shipper")
        shipper = str(self.lookup(shipper_hosts[0], "log_shipper", "promtail")) if shipper_hosts else "promtail"
        return [*ROLES, LOG_SHIPPERS.get(shipper, LOG_SHIPPERS["promtail"])]

    def role(self, group: str) -> Role:
        return next(role for role in self.roles() if role.group == group)

    def members(self, group: str) -> list[str]:
        return sorted(host for host, groups in self.hosts.items() if group == EVERY_HOST or group in groups)

    def port(self, host: str, port: Port) -> int:
        value = (self.lookup(host, port.data_key) or {}).get(port.port_key, port.default)
        # "0.0.0.0:9095" -> 9095
        return int(str(value).rsplit(":", 1)[-1])


def node_id(*parts: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9]", "_", part) for part in parts)


def role_box(cluster: Cluster, host: str, role: Role) -> str:
    ports = ", ".join(f"{port.purpose} :{cluster.port(host, port)}" for port in role.ports)
    detail = ports or role.note
    return f'{node_id(host, role.key)}["{role.title}<br/>{detail}"]' if detail else f'{node_id(host, role.key)}["{role.title}"]'


def mermaid(cluster: Cluster) -> list[str]:
    lines = ["flowchart LR"]
    for key, title in EXTERNAL.items():
        lines.append(f'  {key}(["{title}"])')
    for host in sorted(cluster.hosts):
        lines.append(f'  subgraph {node_id(host)}["{host}"]')
        for role in cluster.roles():
            if host in cluster.members(role.group):
                lines.append(f"    {role_box(cluster, host, role)}")
        lines.append("  end")
    for flow in FLOWS:
        sources = [flow.source] if flow.source in EXTERNAL else [
            node_id(host, cluster.role(flow.source).key) for host in cluster.members(flow.source)]
        if flow.target in EXTERNAL:
            targets = [(flow.target, flow.label)]
        else:
            role = cluster.role(flow.target)
            targets = []
            for host in cluster.members(flow.target):
                port = next((p for p in role.ports if p.purpose == flow.port), None)
                label = f"{flow.label} :{cluster.port(host, port)}" if port else flow.label
                targets.append((node_id(host, role.key), label))
        for source in sources:
            for target, label in targets:
                lines.append(f'  {source} -->|"{label}"| {target}')
    lines.extend(probe_flows(cluster))
    return lines


def probe_flows(cluster: Cluster) -> list[str]:
    """blackbox_exporter -> each host of each probed group (group data `blackbox.probes`)."""
    lines = []
    for prober in cluster.members("blackbox"):
        for probe in (cluster.lookup(prober, "blackbox") or {}).get("probes", []):
            role = next((role for role in cluster.roles() if role.group == probe["group"]), None)
            if role is None:
                continue
            for host in cluster.members(probe["group"]):
                # "http://{host}:9090/-/healthy" -> ":9090/-/healthy": the arrow already names the host.
                where = re.sub(r"^\w+://\{host\}", "", probe["url"]) or "/"
                lines.append(f'  {node_id(prober, "blackbox")} -.->|"probe {probe["module"]} {where}"| {node_id(host, role.key)}')
    return lines


def render(inventory: Path = INVENTORY) -> str:
    cluster = Cluster(inventory)
    shown = os.path.relpath(inventory, REPO) if inventory.is_relative_to(REPO) else inventory.name
    rows = []
    for host in sorted(cluster.hosts):
        for role in cluster.roles():
            if host in cluster.members(role.group):
                ports = ", ".join(f"{cluster.port(host, port)} ({port.purpose})" for port in role.ports) or role.note
                group = "(every host)" if role.group == EVERY_HOST else f"`{role.group}`"
                rows.append(f"| {host} | {role.title} | {group} | {ports} |")
    return "\n".join([
        "# Architecture",
        "",
        f"<!-- Generated by `homelab-diagram` from {shown} and inventory/group_data/: do not edit by hand. -->",
        "",
        "Nodes (boxes), the roles on them with the ports they listen on, and where data flows. Arrows point",
        "from the side that connects to the side that listens. Regenerate with `.venv/bin/homelab-diagram`",
        "after changing the inventory, a port in group data, or a role.",
        "",
        "```mermaid",
        *mermaid(cluster),
        "```",
        "",
        "| node | role | inventory group | ports |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homelab-diagram", description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, default=INVENTORY, help="inventory file (default inventory/homelab.py)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="file to write (default docs/architecture.md)")
    parser.add_argument("--check", action="store_true", help="only check that the file is current (exit 1 if stale)")
    args = parser.parse_args(argv)
    content = render(args.inventory.resolve())
    if args.check:
        current = args.out.read_text() if args.out.is_file() else None
        if current != content:
            print(f"{args.out}: stale diagram: run `.venv/bin/homelab-diagram` and commit it", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(content)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
