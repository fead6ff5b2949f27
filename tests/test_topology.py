"""homelab.topology: which hosts run which role, where each service listens, who calls whom."""

from __future__ import annotations

import pytest
from pyinfra.api.inventory import Inventory

from homelab.config import ConfigError
from homelab.topology import FLOWS, ROLE_BY_NAME, ROLES, Topology, load_inventory
from homelab.types import port_of
from roles.alert_relay import Settings as RelaySettings
from roles.node_exporter import Settings as NodeExporterSettings
from roles.prometheus import Settings as PrometheusSettings
from roles.promtail import DEFAULT_LOG_SHIPPER
from tests.conftest import REPO

PINNED = {"install": {"version": "3.5.0"}}


def topology(hosts: dict[str, dict], **groups: list[str]) -> Topology:
    return Topology(Inventory(([(name, data) for name, data in hosts.items()], {}),
                              **{group: (members, {}) for group, members in groups.items()}))


def test_every_host_gets_the_base_roles_then_its_groups_roles_in_apply_order():
    cluster = topology({"a": {}, "b": {}}, prometheus=["a"], alert_relay=["a"], nginx=["b"], grafana=["b"])
    base = [role.name for role in ROLES if role.group is None]
    assert cluster.roles_of("a") == [*base, "alert_relay", "prometheus"]
    assert cluster.roles_of("b") == [*base, "nginx", "grafana"]
    assert cluster.hosts_of("node_exporter") == ["a", "b"] and cluster.hosts_of("loki") == []


def test_the_log_shipper_group_runs_the_shipper_its_data_chooses():
    cluster = topology({"a": {"log_shipper": "alloy"}, "b": {}}, log_shipper=["a", "b"])
    assert cluster.hosts_of("alloy") == ["a"] + (["b"] if DEFAULT_LOG_SHIPPER == "alloy" else [])
    assert cluster.hosts_of(DEFAULT_LOG_SHIPPER)[-1] == "b"
    with pytest.raises(ConfigError, match=r"^inventory data for c: log_shipper: expected one of 'promtail', "
                                          r"'alloy', got 'fluentd'$"):
        topology({"c": {"log_shipper": "fluentd"}}, log_shipper=["c"]).roles_of("c")


def test_endpoints_come_from_each_hosts_validated_settings():
    cluster = topology({"mon": {"ssh_hostname": "192.0.2.14", "alert_relay": {"listen": "0.0.0.0:9500"}},
                        "spare": {}}, alert_relay=["mon", "spare"], prometheus=["spare"])
    relay = cluster.endpoint("alert_relay")  # the first host of the role
    assert (relay.host, relay.address, relay.port) == ("mon", "192.0.2.14", 9500)
    assert relay.url("/alertmanager") == "http://192.0.2.14:9500/alertmanager"
    assert relay.instance == "mon:9500" and relay.netloc == "192.0.2.14:9500"
    # A host without ssh_hostname is reached by its name, on the role's default port.
    assert cluster.endpoint("alert_relay", "spare").netloc == f"spare:{port_of(RelaySettings().listen)}"
    assert cluster.port("spare", "prometheus") == PrometheusSettings().listen_port
    node = cluster.endpoint("node_exporter", "mon", "metrics")
    assert node.port == NodeExporterSettings().listen_port


def test_bad_settings_of_another_host_are_a_one_line_error_naming_host_and_key():
    cluster = topology({"mon": {"prometheus": {"listen_port": 70000}}}, prometheus=["mon"])
    with pytest.raises(ConfigError, match=r"^inventory data for mon: prometheus\.listen_port: "):
        cluster.endpoint("prometheus")
    with pytest.raises(ConfigError, match=r"^inventory: loki: expected a host in inventory group 'loki'"):
        cluster.endpoint("loki")


def test_lab_nodes_skipping_grafana_packages_are_neither_scraped_nor_probed():
    lab = {"logs": {"vendor_packages_optional": True, "loki": PINNED}, "mon": {}}
    cluster = topology(lab, loki=["logs"], prometheus=["mon"], blackbox=["mon"])
    assert cluster.hosts_of("loki") == ["logs"] and cluster.serving("loki") == []
    assert "loki" not in {job.role for job in cluster.scrape_jobs()}
    assert "loki" not in {probe.role for probe in cluster.health_probes()}


def test_a_health_probe_names_the_scheme_its_host_serves():
    # web-1 with pki.tls on serves its site over https (on nginx's https_port); web-2 is plain.
    cluster = topology({"web-1": {"pki": {"tls": True}}, "web-2": {}, "mon": {}}, nginx=["web-1", "web-2"],
                       alert_relay=["mon"], blackbox=["mon"])
    probes = {probe.endpoint.host: probe for probe in cluster.health_probes() if probe.role == "nginx"}
    https_port = cluster.settings("web-1", "nginx").https_port
    assert probes["web-1"].instance == f"https://web-1:{https_port}/healthz" and probes["web-1"].url.startswith("https://")
    assert probes["web-2"].instance.startswith("http://web-2:") and probes["web-2"].url.startswith("http://")
    assert probes["web-2"].endpoint.port == cluster.settings("web-2", "nginx").listen_port


def test_scrapes_probes_and_flows_cover_every_declared_port():
    cluster = Topology(load_inventory(REPO / "inventory" / "homelab.py"))
    scraped = {(job.role, target.host, target.port) for job in cluster.scrape_jobs() for target in job.targets}
    for role in ROLES:
        for job, listener in role.scrape.items():
            for host in cluster.serving(role.name):
                assert (role.name, host, cluster.port(host, role.name, listener)) in scraped, (job, host)
    probed = {(probe.role, probe.endpoint.host) for probe in cluster.health_probes()}
    assert probed == {(role.name, host) for role in ROLES if any(l.health for l in role.listeners)
                      for host in cluster.serving(role.name)}
    connections = cluster.flows()
    # Every flow between roles the inventory runs appears, on the target's port.
    webhook = [c for c in connections if (c.source, c.target) == ("alertmanager", "alert_relay")]
    assert [(c.target_host, c.port) for c in webhook] == [("worker-node-14", port_of(RelaySettings().listen))]
    for flow in FLOWS:
        assert flow.source in ROLE_BY_NAME or flow.target in ROLE_BY_NAME
        if flow.listener and flow.target in ROLE_BY_NAME:
            ROLE_BY_NAME[flow.target].listener(flow.listener)  # names a port the target has


def test_every_listener_names_a_port_field_of_its_roles_settings():
    # With TLS and a plain port kept beside it, the host serves every listener there is.
    kept_plain = {"pki": {"tls": True}, "toy_redis": {"plain_port": 6390}}
    cluster = topology({"h": {**{name: PINNED for name in ("loki", "promtail", "alloy", "grafana")}, **kept_plain}})
    for role in ROLES:
        assert cluster.listeners("h", role.name) == list(role.listeners)
        for listener in role.listeners:
            assert 1 <= cluster.port("h", role.name, listener.name) <= 65535, (role.name, listener.name)
        for listener in role.scrape.values():
            role.listener(listener)


@pytest.mark.parametrize("tls, plain_port, kept", [(True, 6390, True), (True, None, False), (False, 6390, False)])
def test_toy_redis_keeps_plain_resp_beside_tls_only_when_its_data_says_so(tls, plain_port, kept):
    """toy_redis.plain_port keeps plain RESP beside TLS: then its callers are resp's (the firewall
    opens it to them); without TLS `port` is plain already, and without the setting RESP is TLS only."""
    data = {"pki": {"tls": tls}, "toy_redis": {} if plain_port is None else {"plain_port": plain_port}}
    cluster = topology({"redis": data, "app": {}}, toy_redis=["redis"])
    inbound = {port.listener: port for port in cluster.inbound("redis") if port.role == "toy_redis"}
    assert ("resp_plain" in inbound) is kept
    assert [e.port for e in cluster.endpoints("toy_redis", "resp_plain")] == ([plain_port] if kept else [])
    if kept:
        assert inbound["resp_plain"].port == plain_port
        assert inbound["resp_plain"].parties
        assert (inbound["resp_plain"].callers, inbound["resp_plain"].parties) == (inbound["resp"].callers, inbound["resp"].parties)
