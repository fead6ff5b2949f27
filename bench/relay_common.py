"""What the relay benchmarks share: running the relay from another source tree, to compare."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import tests.alert_relay.conftest as relay_tests


def relay_from(source: str | None, directory: Path) -> None:
    """Make the tests' Relay run ``python -m alert_relay`` from another tree's src/alert_relay
    (e.g. `git archive OLD src/alert_relay | tar -x -C DIR`), or this tree's when None."""
    if not source:
        return
    wrapper = directory / "alert-relay-from-source"
    package_root = Path(source).resolve() / "src" / "alert_relay"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={package_root} exec {sys.executable} -m alert_relay \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    relay_tests.RELAY = wrapper
