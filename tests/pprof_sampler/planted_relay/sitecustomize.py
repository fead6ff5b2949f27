"""Test-only: imported by Python at start-up when this folder is on PYTHONPATH. In the process it is
imported into (the alert relay, in tests/pprof_sampler), a thread waits for the file PLANTED_HOT_FILE
to appear and then burns CPU in deliberate_hot_spot for the seconds written in it, so that a profile
can be checked against what it must show on top."""

import os
import threading
import time
from pathlib import Path


def deliberate_hot_spot(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return spins


def _burn_when_asked(trigger: Path) -> None:
    while not trigger.exists():
        time.sleep(0.05)
    deliberate_hot_spot(float(trigger.read_text()))


if os.environ.get("PLANTED_HOT_FILE"):
    threading.Thread(target=_burn_when_asked, args=(Path(os.environ["PLANTED_HOT_FILE"]),), daemon=True).start()
