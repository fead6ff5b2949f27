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
    return [(job, instance) for host, job, instance in status.expected_targets(topology) if host == node]


def wait_until_scraped_up(topology: Topology, node: str, timeout_s: float = SERVICES_BACK_TIMEOUT_S,
                          poll_s: float = 5) -> None:
    """Until Prometheus's last scrape of every target of ``node`` succeeded; CommandError naming
    the targets still down when ``timeout_s`` is over."""
    wanted = node_targets(topology, node)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows = status.collect(topology).rows
            down = [f"{row.service} ({row.instance}): {row.state}" for row in rows
                    if (row.service, row.instance) in wanted and row.state != "up"]
        except CommandError as exc:  # Prometheus itself may be on the node and still starting
            down = [str(exc)]
        if not down:
            return
        if time.monotonic() > deadline:
            raise CommandError(f"{node}: not back after {timeout_s:.0f} s: {'; '.join(down)}")
        time.sleep(poll_s)


def upgrade(inventory: Path, node: str, say: Callable[[str], None] = print) -> None:
    topology = Topology.load(inventory)
    maintenance.silences_for(topology, [node])  # an unknown node stops here, before anything changes
    ids = maintenance.start(topology, [node], WINDOW, "upgrade to Debian 13")
    say(f"maintenance of {node} for {WINDOW}: {len(ids)} silences")
    try:
        run_deploy(inventory, "deploys/upgrade.py", node)
        run_deploy(inventory, "deploys/all.py", node)
        say(f"waiting for Prometheus to scrape {node}'s services as up")
        wait_until_scraped_up(topology, node)
    except CommandError as exc:
        raise CommandError(f"{exc}; {node}'s alerts stay silenced for up to {WINDOW} "
                           f"(homelab maintenance end {node} lifts that)") from None
    maintenance.end(topology, [node])
    say(f"{node} upgraded: every service scraped as up; maintenance ended")
