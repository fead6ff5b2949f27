"""Test-only costs planted in a service so that a profile can be checked against what it must show
(planted_costs.py), shared by the services' planted start-up hooks: toy-redis's
(tests/profiling/planted/sitecustomize.py, also uploaded to a lab node) and the relay's
(tests/pprof_sampler/planted_relay/sitecustomize.py). Both hooks are `sitecustomize` modules, so each
has a folder of its own; this folder goes on PYTHONPATH beside it."""

from __future__ import annotations

import os
from pathlib import Path

COSTS = Path(__file__).with_name("planted_costs.py")
# The line that keeps the leaked memory: the top of a memory profile's growth.
LEAK_LINE = next(number for number, line in enumerate(COSTS.read_text().splitlines(), 1) if "bytes(1024)" in line)


def pythonpath(hook_dir: Path | str) -> str:
    """PYTHONPATH for a service started with the planted hook of ``hook_dir`` and the shared costs."""
    return os.pathsep.join((str(hook_dir), str(COSTS.parent)))
