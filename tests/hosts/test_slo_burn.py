"""An SLO burn-rate alert on the lab: quiet while toy-redis answers within its latency objective,
firing once commands slower than the objective's threshold become a large share of them (KEYS over a
big keyspace: a slow command a real client can send), and quiet again once fast commands dilute them.
The test puts the lab back as it found it (keys removed, alert resolved), since the healthy-lab check
expects no alert firing."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from homelab.alerts.slos import load_slos
from tests.conftest import REPO
from tests.hosts.test_day2 import PROMETHEUS_NODE, toy_redis_client, wait_until
from tests.hosts.test_prometheus import api

pytestmark = pytest.mark.lab

OBJECTIVE = load_slos(REPO / "alerts" / "slos.yaml").slos.ToyRedisLatency
ALERT = f"{OBJECTIVE.name}ErrorBudgetBurn"
PREFIX = "slo-burn:"
SLOW_COMMANDS = 100
# Rule evaluation follows scrapes; two scrapes of the burst and one evaluation fit well within this.
FIRES_WITHIN_S = 240


def burn_alerts(prometheus) -> list[dict]:
    return [alert for alert in api(prometheus, "alerts")["alerts"] if alert["labels"]["alertname"] == ALERT]


def slow_keyspace(client) -> int:
    """Grow the test's keys until KEYS over them takes well over the objective's threshold (measured
    from here, so it includes the reply's travel; the server's own time is most of it)."""
    keys = 10_000
    while True:
        with client.pipeline(transaction=False) as pipe:
            for start in range(0, keys, 1000):
                pipe.mset({f"{PREFIX}{i}": "x" for i in range(start, start + 1000)})
            pipe.execute()
        started = time.perf_counter()
        client.keys(f"{PREFIX}*")
        if (time.perf_counter() - started) * 1000 > 4 * OBJECTIVE.threshold_ms or keys >= 320_000:
            return keys
        keys *= 2


def remove_test_keys(client) -> None:
    # In slices: one DEL of every key would itself be a command far over the threshold.
    while keys := client.keys(f"{PREFIX}*")[:10_000]:
        client.delete(*keys)


def slow_commands_in_the_longest_window(prometheus) -> float:
    """Commands over the threshold toy-redis served within the 6h burn window."""
    def count(selector: str) -> float:
        query = quote(f"sum(increase(toy_redis_command_duration_seconds_{selector}[6h]))")
        result = api(prometheus, f"query?query={query}")["result"]
        return float(result[0]["value"][1]) if result else 0.0

    return count(f'count{{job="{OBJECTIVE.job}"}}') - count(f'bucket{{job="{OBJECTIVE.job}",le="{OBJECTIVE.le}"}}')


def dilute(client, prometheus) -> None:
    """Fast commands until slow ones are far below every burn threshold in every window up to 6h
    (the lowest threshold, 6x at 99%, allows 6% of commands over the objective's threshold): 50x as
    many as Prometheus has seen slow, plus enough for slow commands its last scrape missed."""
    needed = int(slow_commands_in_the_longest_window(prometheus) * 50) + 150 * SLOW_COMMANDS
    for start in range(0, needed, 10_000):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(10_000, needed - start)):
                pipe.ping()
            pipe.execute()


@pytest.fixture
def client(deployed):
    with toy_redis_client() as client:
        yield client
        remove_test_keys(client)


def test_the_latency_burn_alert_fires_on_slow_commands_and_not_on_fast_ones(client, testinfra_hosts):
    prometheus = testinfra_hosts[PROMETHEUS_NODE]
    # Earlier tests may have sent slow commands (bulk loads): fast traffic alone must quiet the alert.
    dilute(client, prometheus)
    wait_until(lambda: not burn_alerts(prometheus), FIRES_WITHIN_S, f"{ALERT} quiet under fast commands", interval=5)

    slow_keyspace(client)
    for _ in range(SLOW_COMMANDS):
        client.keys(f"{PREFIX}*")
    firing = wait_until(lambda: [a for a in burn_alerts(prometheus) if a["state"] == "firing"], FIRES_WITHIN_S,
                        f"{ALERT} to fire", interval=5)
    assert firing[0]["labels"]["slo"] == OBJECTIVE.name and firing[0]["labels"]["window"] in ("1h", "6h")

    remove_test_keys(client)
    dilute(client, prometheus)
    wait_until(lambda: not burn_alerts(prometheus), FIRES_WITHIN_S, f"{ALERT} to stop once fast commands dilute the slow ones",
               interval=5)
