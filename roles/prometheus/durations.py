"""Durations as Prometheus and Alertmanager write them (30s, 5m, 1h30m, 15d)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# Units from largest to smallest, each at most once, as Prometheus's model.ParseDuration accepts.
_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def _check_duration(value: str) -> str:
    if not value or not _DURATION.fullmatch(value):
        raise ValueError("expected a duration like 30s, 5m, 1h30m or 15d")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]


def seconds(duration: str) -> float:
    """A validated duration in seconds, to compare two settings (e.g. a timeout with its interval)."""
    return sum(int(number) * _SECONDS[unit] for number, unit in re.findall(r"(\d+)(ms|[ywdhms])", duration))
