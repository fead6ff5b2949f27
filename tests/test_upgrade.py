"""`homelab upgrade`: what it checks before and after the upgrade itself, against real Prometheus and
Alertmanager processes on loopback (the upgrade of a node is tests/lab/test_upgrade.py's)."""

from __future__ import annotations

import time

import pytest
import requests

from homelab import maintenance, upgrade
from homelab.cli import main
from homelab.maintenance import CommandError
from tests.test_status import NODE, cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_the_check_waits_for_fresh_successful_scrapes_of_every_target_of_the_node(cluster):  # noqa: F811
    _inventory, topology, _am_url, _prom_url, servers = cluster
    upgrade.wait_until_scraped_up(topology, NODE, since=time.time(), timeout_s=60, poll_s=0.5)

    # toy-redis's metrics stop answering: an earlier successful scrape does not count.
    toy_redis = topology.endpoint("toy_redis", NODE, "metrics").instance
    servers[1].shutdown()
    servers[1].server_close()
    with pytest.raises(CommandError) as failure:
        upgrade.wait_until_scraped_up(topology, NODE, since=time.time(), timeout_s=5, poll_s=0.5)
    message = str(failure.value)
    assert message.startswith(f"{NODE}: not back after 5 s: ") and "\n" not in message
    assert f"({toy_redis}): down" in message
    assert "node_exporter" not in message.split("not back")[1]  # still answering


def test_an_unknown_node_is_refused_in_one_line_before_any_silence(cluster, capsys):  # noqa: F811
    inventory, topology, am_url, _prom_url, _servers = cluster
    assert main(["upgrade", "no-such-node", "--inventory", str(inventory)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("homelab: unknown node 'no-such-node': expected one of ") and err.count("\n") == 1
    assert requests.get(f"{am_url}/api/v2/silences", timeout=5).json() == []
    assert maintenance.windows(topology) == []
