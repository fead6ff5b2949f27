"""The socket tuning fixes what it claims: a burst through nginx to a unix-socket upstream.

bench/nginx_burst.py does the work (and prints the numbers the README quotes): it deploys the
tuning and nginx roles on the nginx host with Debian's own values, then with inventory/tuning.yaml
but the kernel's default net.core.somaxconn, then with inventory/tuning.yaml, and sends one burst
each. Measured here: the per-network-namespace keys (net.core.somaxconn, which sizes the upstream's
accept queue, the tcp_* keys) and nginx's own; the kernel-global ones (fs.*, vm.*,
net.core.netdev_max_backlog) cannot take effect in a lab node and are not measured.
"""

import importlib.util
import sys

import pytest

from roles.tuning.settings import load_tuning
from tests.conftest import REPO

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")


def load_bench():
    spec = importlib.util.spec_from_file_location("nginx_burst", REPO / "bench" / "nginx_burst.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_tuning_serves_a_burst_that_debian_defaults_fail(deployed):
    bench = load_bench()
    outcomes = {o.condition: o for o in bench.measure(bench.DEFAULT_BURST, bench.DEFAULT_WORK_MS)}
    defaults, default_somaxconn, tuned = (outcomes[name] for name in ("debian-defaults", "default-somaxconn", "tuning"))
    print(*(vars(o) for o in outcomes.values()), sep="\n")
    debian = load_tuning(bench.DEFAULTS_FILE)

    # The upstream's accept queue is what net.core.somaxconn makes it, as for Grafana.
    assert defaults.upstream_backlog == debian.sysctl["net.core.somaxconn"] < bench.DEFAULT_BURST
    assert tuned.upstream_backlog == TUNING.sysctl["net.core.somaxconn"] >= bench.DEFAULT_BURST
    # Debian's defaults lose requests before the upstream sees them: with 768 connections per worker,
    # nginx closes accepted connections unanswered (logged only at warn level, "worker_connections
    # are not enough, reusing connections").
    assert defaults.ok < bench.DEFAULT_BURST and defaults.no_response > 0
    # With nginx tuned but the kernel's somaxconn, the upstream's queue overflows: EAGAIN, one 502 each.
    assert default_somaxconn.eagain > 0 and default_somaxconn.bad_gateway == default_somaxconn.eagain
    # The whole tuning: every request answered, no upstream connect error, nothing dropped.
    assert (tuned.ok, tuned.bad_gateway, tuned.eagain, tuned.no_response, tuned.listen_overflows) == \
        (bench.DEFAULT_BURST, 0, 0, 0, 0)
