"""How a host runs our own services (toy-redis, alert-relay): host data `runtime`.

    runtime = "systemd"     # default: a venv from our wheels under a hardened systemd unit
    runtime = "container"   # the service's image (homelab image build), run by a systemd unit

Set it per host (inventory host data) or per group (inventory/group_data/<group>.py). The roles
read it (roles/container_runtime), and so does the lab tool, which boots a node that runs
containers with what Docker needs inside systemd-nspawn (homelab.lab.nodes).
"""

from __future__ import annotations

from typing import Literal, get_args

Runtime = Literal["systemd", "container"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
DEFAULT_RUNTIME: Runtime = "systemd"
# The host data key.
KEY = "runtime"


def check_runtime(value: object) -> Runtime:
    """``value`` as a Runtime; ValueError saying what was expected otherwise."""
    if value not in RUNTIMES:
        raise ValueError(f"expected one of {', '.join(RUNTIMES)}, got {value!r}")
    return value  # type: ignore[return-value]
