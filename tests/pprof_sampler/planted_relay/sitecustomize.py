"""Test-only: imported by Python at start-up when this folder is on PYTHONPATH (with tests/planted
beside it, see tests.planted.pythonpath). In the process it is imported into (the alert relay, in
tests/pprof_sampler), threads wait for trigger files:

    PLANTED_HOT_FILE     when it appears, burn CPU in deliberate_hot_spot for the seconds written in it
    PLANTED_LEAK_FILE    while it exists, keep the KB written in it more every LEAK_PERIOD_S, for good

so that a CPU or memory profile can be checked against what it must show on top."""

import os
import threading
import time
from pathlib import Path

from planted_costs import deliberate_hot_spot, deliberate_leak

POLL_S = 0.05
LEAK_PERIOD_S = 0.01


def _burn_when_asked(trigger: Path) -> None:
    while not trigger.exists():
        time.sleep(POLL_S)
    deliberate_hot_spot(float(trigger.read_text()))


def _leak_while_asked(trigger: Path) -> None:
    while True:
        try:
            deliberate_leak(int(trigger.read_text()))
            time.sleep(LEAK_PERIOD_S)
        except (FileNotFoundError, ValueError):  # not there (yet or any more), or being written
            time.sleep(POLL_S)


for _variable, _watch in (("PLANTED_HOT_FILE", _burn_when_asked), ("PLANTED_LEAK_FILE", _leak_while_asked)):
    if os.environ.get(_variable):
        threading.Thread(target=_watch, args=(Path(os.environ[_variable]),), daemon=True).start()
