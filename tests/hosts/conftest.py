"""Fixtures of the lab tests that deploy the lab with pki.tls on (test_tls_cluster, test_tls_rotation).

A module gets the lab deployed with ``pki_data`` (default TLS_ON; a module overrides the fixture, e.g.
with short-lived certificates) for its tests, and the lab's own settings (TLS off) deployed back
once at its end, by its last test (``deploy_tls_off()``, to check what TLS off leaves) or else by
tls_lab's teardown, as the other lab tests expect.
"""

from __future__ import annotations

import functools
import json
import time

import pytest

from homelab.access import access
from tests.conftest import TLS_ON, run_pyinfra
from tests.hosts.test_prometheus import TARGETS_UP_WITHIN_S


@pytest.fixture(scope="module")
def pki_data() -> dict:
    """The group data key `pki` tls_lab deploys with."""
    return TLS_ON


@pytest.fixture(scope="module")
def tls_data(pki_data) -> tuple[str, str]:
    """pyinfra's arguments deploying with pki_data."""
    return ("--data", "pki=" + json.dumps(pki_data))


@pytest.fixture(scope="module")
def deploy_tls_off():
    """Deploys the lab's own settings (TLS off) back: once per module, however often it is called."""
    return functools.cache(lambda: run_pyinfra("deploys/all.py"))


@pytest.fixture(scope="module")
def tls_lab(deployed, tls_data, deploy_tls_off):
    deploy = run_pyinfra("deploys/all.py", *tls_data)
    try:
        yield deploy
    finally:
        back = deploy_tls_off()
        assert back.returncode == 0 and not back.failed(), back.stderr[-4000:]


def wait_for_targets_up(topology) -> list[dict]:
    """Prometheus's active targets once all are up, or after TARGETS_UP_WITHIN_S (the caller asserts)."""
    prometheus = access(topology, "prometheus")
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while True:
        active = prometheus.get("/api/v1/targets", params={"state": "active"}, timeout=10).json()["data"]["activeTargets"]
        if (active and all(t["health"] == "up" for t in active)) or time.monotonic() > deadline:
            return active
        time.sleep(5)
