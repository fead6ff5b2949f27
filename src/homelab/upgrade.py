"""`homelab upgrade NODE`: one node from Debian 12 to Debian 13 in place, its alerts silenced meanwhile.

The steps of docs/upgrade-debian13.md, in order, stopping at the first that fails:

1. a maintenance window on the node (homelab.maintenance: Alertmanager silences);
2. `pyinfra deploys/upgrade.py --limit NODE`: apt sources to trixie, full upgrade, reboot;
3. `pyinfra deploys/all.py --limit NODE`: the node's roles for its new release (our services get
   wheels for its new Python);
4. wait until Prometheus scrapes every target of the node successfully again;
5. end the window.

When a step fails the window stays (it ends by itself when its time is up), since the node is
still being worked on; the error says which step and how to lift the window by hand.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from homelab import maintenance, status
from homelab.maintenance import CommandError
from homelab.topology import Topology

REPO = Path(__file__).resolve().parents[2]
# A window long enough for a slow mirror and a slow reboot; a failed upgrade keeps it until then.
WINDOW = "2h"
# After the deploy, how long the node's services may take to be scraped as up again.
SERVICES_BACK_TIMEOUT_S = 180


def run_deploy(inventory: Path, deploy: str, node: str) -> None:
    command = [str(Path(sys.executable).parent / "pyinfra"), "-y", str(inventory), deploy, "--limit", node]
    result = subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise CommandError(f"{deploy} on {node} failed (pyinfra exit status {result.returncode})")


def node_targets(topology: Topology, node: str) -> list[tuple[str, str]]:
    """(job, instance) of everything Prometheus scrapes or probes on ``node``."""
    return [(job, instance) for host, job, instance, _unit in status.expected_targets(topology) if host == node]


def not_scraped_up_since(topology: Topology, node: str, since: float) -> list[str]:
    """The targets of ``node`` whose last scrape is older than ``since`` (Unix time) or failed."""
    prometheus = topology.access("prometheus")

    def by_target(query: str) -> dict[tuple[str, str], float]:
        return {(sample["metric"].get("job"), sample["metric"].get("instance")): float(sample["value"][1])
                for sample in status._prometheus_query(prometheus, query)}

    up, scraped_at = by_target("up"), by_target("timestamp(up)")
    return [f"{job} ({instance}): {'down' if up.get((job, instance)) == 0 else 'no scrape yet'}"
            for job, instance in node_targets(topology, node)
            if up.get((job, instance)) != 1 or scraped_at.get((job, instance), 0) <= since]


def wait_until_scraped_up(topology: Topology, node: str, since: float, timeout_s: float = SERVICES_BACK_TIMEOUT_S,
                          poll_s: float = 5) -> None:
    """Until every target of ``node`` was scraped successfully after ``since`` (an older success
    says nothing about the services the deploy just restarted); CommandError naming the targets
    still not back when ``timeout_s`` is over."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            missing = not_scraped_up_since(topology, node, since)
        except CommandError as exc:  # Prometheus itself may be on the node and still starting
            missing = [str(exc)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise CommandError(f"{node}: not back after {timeout_s:.0f} s: {'; '.join(missing)}")
        time.sleep(poll_s)


def upgrade(inventory: Path, node: str, say: Callable[[str], None] = print) -> None:
    topology = Topology.load(inventory)
    maintenance.silences_for(topology, [node])  # an unknown node stops here, before anything changes
    ids, warning = maintenance.start(topology, [node], WINDOW, "upgrade to Debian 13")
    say(f"maintenance of {node} for {WINDOW}: {len(ids)} silences")
    if warning:
        say(f"warning: {warning}")
    try:
        run_deploy(inventory, "deploys/upgrade.py", node)
        run_deploy(inventory, "deploys/all.py", node)
        say(f"waiting for Prometheus to scrape {node}'s services as up")
        wait_until_scraped_up(topology, node, since=time.time())
    except CommandError as exc:
        raise CommandError(f"{exc}; {node}'s alerts stay silenced for up to {WINDOW} "
                           f"(homelab maintenance end {node} lifts that)") from None
    _expired, warning = maintenance.end(topology, [node])
    if warning:
        say(f"warning: {warning}")
    say(f"{node} upgraded: every service scraped as up; maintenance ended")
