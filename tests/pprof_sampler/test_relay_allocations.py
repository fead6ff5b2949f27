"""The alert relay's allocation view (GET /debug/allocations, what `homelab profile NODE alert_relay
--memory` asks for) in a real relay with a planted leak: the leaking line tops the growth, tracing
is on only while a view is taken (the relay's own alert_relay_allocation_tracing says so), one view
at a time, and only after the login of web_config_file."""

from __future__ import annotations

import threading

import pytest
import requests
from pprof_sampler.allocations import DEFAULT_SITES, MAX_SECONDS, MAX_SITES, PATH

from homelab import profiling
from homelab.access import Access
from homelab.topology import Endpoint
from tests.alert_relay.conftest import faxplus, make_relay, slack  # noqa: F401 (fixtures)
from tests.alert_relay.test_tls import PASSWORD, tls_files  # noqa: F401 (fixture)
from tests.loopback import wait_for
from tests.planted import COSTS, LEAK_LINE, pythonpath

from .test_alert_relay import PLANTED

LEAK_KB = 64


@pytest.fixture
def leaky_relay(make_relay, tls_files, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", pythonpath(PLANTED))
    monkeypatch.setenv("PLANTED_LEAK_FILE", str(tls_files / "leak"))
    return make_relay(web_config_file=str(tls_files / "web.yml"))


def relay_access(relay, tls_files, auth=("prometheus", PASSWORD)) -> Access:  # noqa: F811
    port = int(relay.url.rsplit(":", 1)[1])
    return Access(Endpoint("relay", "127.0.0.1", port), tls=True, ca_file=tls_files / "ca.crt", auth=auth)


def tracing(access: Access) -> float:
    """The relay's own alert_relay_allocation_tracing gauge."""
    for line in access.get("/metrics").text.splitlines():
        if line.startswith("alert_relay_allocation_tracing "):
            return float(line.split()[1])
    raise AssertionError("alert_relay_allocation_tracing not in /metrics")


def test_the_leaking_line_tops_the_growth(leaky_relay, tls_files):  # noqa: F811
    (tls_files / "leak").write_text(str(LEAK_KB))
    try:
        sites = profiling.relay_allocations(relay_access(leaky_relay, tls_files), 2)
    finally:
        (tls_files / "leak").unlink()
    top = max(sites, key=lambda site: site.growth)
    assert (top.file, top.line) == (str(COSTS), LEAK_LINE)
    assert top.growth > 1024 * 1024 and top.size >= top.growth
    assert len(sites) <= 2 * profiling.MEMORY_SITES
    assert profiling.memory_summary(sites).startswith(f"growth: {COSTS.name}:{LEAK_LINE} +")


def test_tracing_is_on_only_during_one_view_at_a_time(leaky_relay, tls_files):  # noqa: F811
    access = relay_access(leaky_relay, tls_files)
    assert tracing(access) == 0
    view = threading.Thread(target=profiling.relay_allocations, args=(access, 3), daemon=True)
    view.start()
    wait_for(lambda: tracing(access) == 1, timeout=5, what="the view to turn tracing on")
    second = access.get(PATH, params={"seconds": 1})
    assert second.status_code == 429 and second.text == "an allocation view is being taken: retry after it\n"
    view.join(timeout=15)
    assert not view.is_alive()
    assert tracing(access) == 0


def test_the_view_asks_for_the_login_and_bounded_numbers(leaky_relay, tls_files):  # noqa: F811
    for auth in (None, ("prometheus", "wrong")):
        assert relay_access(leaky_relay, tls_files, auth).get(PATH, params={"seconds": 1}).status_code == 401
    access = relay_access(leaky_relay, tls_files)
    for params in ({"seconds": MAX_SECONDS + 1}, {"seconds": 0}, {}, {"seconds": 1, "sites": MAX_SITES + 1},
                   {"seconds": "1e3"}, {"seconds": [1, 2]}):
        refused = access.get(PATH, params=params)
        assert refused.status_code == 400, params
        assert refused.text == f"expected seconds=1..{MAX_SECONDS} and optionally sites=1..{MAX_SITES} (default {DEFAULT_SITES})\n"
    assert tracing(access) == 0


def test_a_relay_stopping_ends_the_view_with_tracing_off(leaky_relay, tls_files):  # noqa: F811
    access = relay_access(leaky_relay, tls_files)
    answers = []
    view = threading.Thread(target=lambda: answers.append(access.get(PATH, params={"seconds": 600}, timeout=30)),
                            daemon=True)
    view.start()
    wait_for(lambda: tracing(access) == 1, timeout=5, what="the view to turn tracing on")
    assert leaky_relay.stop() == 0
    view.join(timeout=15)
    assert answers and answers[0].status_code == 503


def test_without_web_config_file_there_is_no_view(make_relay):  # noqa: F811
    relay = make_relay()
    assert requests.get(f"{relay.url}{PATH}?seconds=1", timeout=10).status_code == 404
