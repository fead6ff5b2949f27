"""The `alertmanager:` section of alerts/routes.yaml: grouping, timing and which receiver gets what.

    alertmanager:
      group_by: [alertname, instance]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:                       # first match wins, as in Alertmanager
        - match: {severity: critical}
          repeat_interval: 1h
        - match: {alertname: "Watchdog|InfoOnly.*"}
          receiver: blackhole       # seen in Alertmanager's UI, never sent

A matcher value is exact unless it contains regex characters; then it must match the whole label
value (Alertmanager's =~). Receivers: `alert-relay` (the relay's webhook, the default) and
`blackhole` (no notification). Other top-level sections (`slack:`) belong to the alert relay.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from homelab.config import ConfigError, FieldError, StrictModel, model_from_data, read_yaml
from homelab.types import Duration

RELAY_RECEIVER = "alert-relay"
BLACKHOLE_RECEIVER = "blackhole"
Receiver = Literal["alert-relay", "blackhole"]

LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
_REGEX_CHARACTERS = set(".*+?^$()[]{}|\\")


def is_regex(value: str) -> bool:
    return any(char in _REGEX_CHARACTERS for char in value)


def _check_matchers(match: dict[str, str]) -> dict[str, str]:
    if not match:
        raise ValueError("expected at least one label: value pair")
    for label, value in match.items():
        if is_regex(value):
            try:
                re.compile(value)
            except re.error as exc:
                raise FieldError(label, f"expected a valid regex, got {value!r} ({exc})") from None
    return match


class Route(StrictModel):
    match: Annotated[dict[LabelName, str], AfterValidator(_check_matchers)]
    receiver: Receiver = RELAY_RECEIVER
    group_by: list[LabelName] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    # true: later routes are tried too after this one matched.
    continue_: bool = Field(False, alias="continue")

    def matchers(self) -> list[str]:
        """Alertmanager matcher strings: label="value" or label=~"regex", values quoted."""
        return [
            f"{label}{'=~' if is_regex(value) else '='}{json.dumps(value, ensure_ascii=False)}"
            for label, value in self.match.items()
        ]

    def config(self) -> dict[str, Any]:
        """This route as Alertmanager's config has it."""
        config: dict[str, Any] = {"matchers": self.matchers(), "receiver": self.receiver}
        if self.group_by is not None:
            config["group_by"] = self.group_by
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if getattr(self, key):
                config[key] = getattr(self, key)
        if self.continue_:
            config["continue"] = True
        return config


class Routing(StrictModel):
    group_by: list[LabelName] = ["alertname"]
    group_wait: Duration = "30s"
    group_interval: Duration = "5m"
    repeat_interval: Duration = "4h"
    routes: list[Route] = []


class RoutesFile(BaseModel):
    # Only `alertmanager:` is ours; the relay validates the rest of the file.
    model_config = {"extra": "ignore", "strict": True, "frozen": True}

    alertmanager: Routing


def load_routing(path: Path, shown_as: str) -> Routing:
    """The validated routing; any problem is one line naming ``shown_as`` and the key."""
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(shown_as, exc.key, exc.expected) from None
    return model_from_data(shown_as, RoutesFile, data).alertmanager
