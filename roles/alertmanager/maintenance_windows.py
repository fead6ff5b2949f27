"""Recurring maintenance windows (alerts/maintenance.yaml) as Alertmanager time intervals.

    windows:
      saturday-patching:              # a name: letters, digits, - and _
        nodes: [worker-node-12]       # inventory hosts; a host is in at most one window
        location: Europe/Berlin       # IANA time zone of the times below (default UTC)
        times:                        # Alertmanager's time_interval fields; the window is open when one matches
          - weekdays: [saturday]
            times: [{start_time: "02:00", end_time: "04:00"}]

While a window is open, Alertmanager sends no notification for the alerts a `homelab maintenance`
window on those nodes would silence (their instances, and services that run only on them); the
alerts still show in its UI and `homelab status`, and one still firing when the window closes is
sent then. Each window becomes routes in front of the routes.yaml ones, matching those alerts and
holding copies of them, every one muted by the window's interval: Alertmanager does not pass
mute_time_intervals down to child routes (prometheus/alertmanager#3211), and an alert is routed by
the first route it matches, hence one window per host.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, Field, field_validator, model_validator

from homelab.config import ConfigError, FieldError, StrictModel, model_from_data, read_yaml
from homelab.topology import Topology

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def _values(what: str, low: int, high: int, names: tuple[str, ...] = (), numbers: bool = True):
    """A validator of Alertmanager's `item` and `start:end` values: ``names`` (any case) or numbers
    ``low``..``high`` (negative too for days of the month, counted from its end)."""
    def number(text: str) -> int:
        if text.lower() in names:
            return names.index(text.lower()) + low
        if numbers and re.fullmatch(r"-?[0-9]+", text) and low <= abs(int(text)) <= high:
            return int(text)
        raise ValueError

    def check(values: list[str]) -> list[str]:
        if not values:
            raise ValueError("expected at least one value (leave the key out for any)")
        for index, value in enumerate(values):
            parts = value.split(":")
            try:
                bounds = [number(part) for part in parts]
                if len(bounds) > 2 or (len(bounds) == 2 and min(bounds) >= 0 and bounds[0] > bounds[1]):
                    raise ValueError
            except ValueError:
                raise FieldError(str(index), f"expected {what} or a range of them (start:end), got {value!r}") from None
        return values

    return AfterValidator(check)


Clock = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


class TimeRange(StrictModel):
    start_time: Clock
    end_time: Clock

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> "TimeRange":
        if self.end_time != "24:00" and time.fromisoformat(self.end_time) <= time.fromisoformat(self.start_time):
            raise FieldError("end_time", f"expected a time after start_time {self.start_time}, got {self.end_time!r}")
        return self


class TimeInterval(StrictModel):
    times: list[TimeRange] | None = None
    weekdays: Annotated[list[str], _values("a weekday name", 0, 6, WEEKDAYS, numbers=False)] | None = None
    days_of_month: Annotated[list[str], _values("a day 1..31 or -31..-1", 1, 31)] | None = None
    months: Annotated[list[str], _values("a month name or 1..12", 1, 12, MONTHS)] | None = None
    years: Annotated[list[str], _values("a year", 1, 9999)] | None = None


class Window(StrictModel):
    nodes: list[str] = Field(min_length=1)
    location: str = "UTC"
    times: list[TimeInterval] = Field(min_length=1)

    @field_validator("location")
    @classmethod
    def _a_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone like UTC or Europe/Berlin, got {value!r}") from None
        if value not in available_timezones() | {"UTC", "Local"}:
            raise ValueError(f"expected an IANA time zone like UTC or Europe/Berlin, got {value!r}")
        return value

    def time_intervals(self) -> list[dict[str, Any]]:
        return [{**interval.model_dump(exclude_none=True), "location": self.location} for interval in self.times]


WindowName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class MaintenanceFile(StrictModel):
    windows: dict[WindowName, Window] = {}


def load_windows(path, shown_as: str, topology: Topology) -> dict[str, Window]:
    """The validated windows; an unknown node or a node in two windows is one line naming the key."""
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(shown_as, exc.key, exc.expected) from None
    windows = model_from_data(shown_as, MaintenanceFile, data).windows
    owner: dict[str, str] = {}
    for name, window in windows.items():
        for index, node in enumerate(window.nodes):
            key = f"windows.{name}.nodes.{index}"
            if node not in topology.hosts:
                raise ConfigError(shown_as, key, f"expected an inventory host ({', '.join(topology.hosts)}), got {node!r}")
            if node in owner:
                raise ConfigError(shown_as, key, f"{node} is already in window {owner[node]!r}; a host is in one window "
                                                 "(give that window more times instead)")
            owner[node] = name
    return windows


def matcher_text(matcher: dict[str, Any]) -> str:
    """An API v2 silence matcher as a route matcher string: name="value" or name=~"regex"."""
    value = matcher["value"].replace("\\", "\\\\").replace('"', '\\"')
    return f'{matcher["name"]}{"=~" if matcher["isRegex"] else "="}"{value}"'


def window_routes(windows: dict[str, Window], topology: Topology, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Routes (Alertmanager's shape) sending each window's alerts through ``routes``, all muted while it is open."""
    from homelab.maintenance import silences_for

    found = []
    for name, window in windows.items():
        for silence in silences_for(topology, window.nodes):
            found.append({"matchers": [matcher_text(matcher) for matcher in silence.matchers],
                          "mute_time_intervals": [name],
                          "routes": [{**route, "mute_time_intervals": [name]} for route in routes]})
    return found
