"""Certificate rotation without a scrape gap (issue 13 item 6), on the lab, by time travel.

The lab is deployed with pki.tls on and short-lived certificates (pki_data: CERT_LIFETIME with a
ROTATION_MARGIN that leaves them due for rotation a minute after they are issued), as a real
cluster's certificates are after cert_lifetime - rotation_margin. The next deploy after that
minute issues each node a new certificate, which every secured listener then serves on the wire
(a new serial and notAfter), read by the control machine's own TLS handshake, and for the one it
may not call (blackbox's, Prometheus's only) from blackbox's TLS check of it in Prometheus. Across
that deploy Prometheus scraped every secured target at every scrape interval, with success: the
services picked up the new certificate without a restart (exporter-toolkit rereads its files per
handshake; toy-redis and the relay reload theirs for new handshakes; nginx reloads gracefully),
and Prometheus and blackbox presented their own new pair to nginx's fronted ports. The lab's own settings
(TLS off) are deployed back at the end (tls_lab).
"""

from __future__ import annotations

import socket
import time

import pytest
from cryptography import x509

import roles.pki
from homelab.access import access
from homelab.alerts.catalog import TLS_CHECK_JOB
from homelab.topology import CONTROL, ROLES
from homelab.types import seconds
from tests.conftest import TLS_ON, run_pyinfra
from tests.hosts.conftest import wait_for_targets_up

pytestmark = pytest.mark.lab

CERT_LIFETIME = "10m"
ROTATION_MARGIN = "9m"
# Scrape timestamps follow a fixed schedule within milliseconds; a missed scrape doubles the gap.
GAP_TOLERANCE = 1.5


@pytest.fixture(scope="module")
def pki_data() -> dict:
    return {**TLS_ON, "cert_lifetime": CERT_LIFETIME, "rotation_margin": ROTATION_MARGIN}


def secured_listeners(topology):
    """(role, listener, host, reachable from the control machine) of every secured listener served."""
    from_control = {(host, inbound.role, inbound.listener) for host in topology.hosts
                    for inbound in topology.inbound(host) if CONTROL in inbound.parties}
    return [(role.name, listener.name, host, (host, role.name, listener.name) in from_control)
            for role in ROLES for listener in role.listeners if listener.secured
            for host in topology.serving(role.name) if topology.serves(host, role.name, listener.name)]


def served_certificate(topology, role: str, listener: str, host: str) -> x509.Certificate:
    """The certificate ``role``'s ``listener`` on ``host`` presents in a new TLS handshake, verified
    with the cluster CA."""
    via = access(topology, role, host, listener)
    endpoint = via.endpoint
    with socket.create_connection((endpoint.address, endpoint.port), timeout=10) as raw, \
            via.ssl_context().wrap_socket(raw, server_hostname=endpoint.address) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def on_the_wire(topology) -> dict[tuple[str, str, str], x509.Certificate]:
    return {(role, listener, host): served_certificate(topology, role, listener, host)
            for role, listener, host, reachable in secured_listeners(topology) if reachable}


def tls_check_expiries(prometheus) -> dict[str, float]:
    """instance -> notAfter of the certificate blackbox's TLS check last saw it serve."""
    answer = prometheus.get("/api/v1/query", params={"query": f'probe_ssl_earliest_cert_expiry{{job="{TLS_CHECK_JOB}"}}'},
                            timeout=10).json()
    return {r["metric"]["instance"]: float(r["value"][1]) for r in answer["data"]["result"]}


def test_the_deploy_after_the_margin_rotates_every_certificate_without_a_scrape_gap(tls_lab, tls_data, tls_topology):
    assert tls_lab.returncode == 0 and not tls_lab.failed(), tls_lab.stderr[-4000:]
    active = wait_for_targets_up(tls_topology)
    assert all(t["health"] == "up" for t in active), [t["lastError"] for t in active if t["health"] != "up"]
    prometheus = access(tls_topology, "prometheus")
    interval = seconds(tls_topology.settings(tls_topology.hosts_of("prometheus")[0], "prometheus").scrape_interval)
    before = on_the_wire(tls_topology)
    # The short-lived ones this module deployed (not a 90-day certificate left from another run).
    assert before and all(cert.not_valid_after_utc.timestamp() <= time.time() + seconds(CERT_LIFETIME)
                          for cert in before.values())
    # Every secured http listener is checked by blackbox; its check of blackbox is what we read for
    # blackbox's own listener, which the control machine may not call.
    time.sleep(2 * interval)
    checked_before = tls_check_expiries(prometheus)
    due = max(cert.not_valid_after_utc.timestamp() for cert in before.values()) - seconds(ROTATION_MARGIN)
    time.sleep(max(0.0, due + 1 - time.time()))

    started = time.time()
    rotation = run_pyinfra("deploys/all.py", *tls_data)
    ended = time.time()
    assert rotation.returncode == 0 and not rotation.failed(), rotation.stderr[-4000:]
    rotated = {host for name, hosts in rotation.changed() if f"Node certificate {roles.pki.CERT_FILE}" in name
               for host in hosts}
    assert rotated == set(tls_topology.hosts), [name for name, _hosts in rotation.changed()]

    after = on_the_wire(tls_topology)
    for where, cert in after.items():
        assert cert.serial_number != before[where].serial_number, f"{where}: still serves the old certificate"
        assert cert.not_valid_after_utc > before[where].not_valid_after_utc, where
    time.sleep(2 * interval)  # a TLS check of each listener after the deploy
    checked_after = tls_check_expiries(prometheus)
    assert checked_before and set(checked_after) == set(checked_before)
    assert [instance for instance in checked_after if checked_after[instance] <= checked_before[instance]] == []

    # Every target scraped over https, and every TLS check, succeeded at every interval across the deploy.
    secured = {(t["labels"]["job"], t["labels"]["instance"]) for t in active if t["scrapeUrl"].startswith("https://")}
    window = f"{int(time.time() - started + 2 * interval)}s"  # from a scrape before the deploy began
    for metric in ("up", f'probe_success{{job="{TLS_CHECK_JOB}"}}'):
        answer = prometheus.get("/api/v1/query", params={"query": f"{metric}[{window}]"}, timeout=10).json()
        series = {(r["metric"]["job"], r["metric"]["instance"]): r["values"] for r in answer["data"]["result"]}
        for target in sorted(secured if metric == "up" else set(series)):
            stamps = [float(stamp) for stamp, _value in series[target]]
            failed = [stamp for stamp, value in series[target] if value != "1"]
            gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
            assert stamps[0] <= started and stamps[-1] >= ended, f"{metric} {target}: no samples around the rotation"
            assert not failed, f"{metric} {target}: failed at {failed} (rotation from {started:.0f} to {ended:.0f})"
            assert max(gaps) < GAP_TOLERANCE * interval, f"{metric} {target}: a gap of {max(gaps):.1f}s"
