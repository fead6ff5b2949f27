"""Which Slack channel gets each alert and fax: the `slack:` section of alerts/routes.yaml.

The file's `alertmanager:` section belongs to Alertmanager's route tree (roles/alertmanager) and is
not read here.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from alert_relay.config import FieldError, StrictModel, load_yaml_model

# "#name" as people write it, or a channel ID (C…/G…) as Slack shows it.
CHANNEL = r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{8,})$"
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def e164(number: str) -> str:
    """A phone number in E.164 form (+ and digits): "+1 (555) 010-0142" and "0015550100142" -> "+15550100142"."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if not number.lstrip().startswith("+") and digits.startswith("00"):
        digits = digits[2:]  # the international call prefix used in much of the world
    return f"+{digits}"


class AlertRoute(StrictModel):
    # label name -> exact value or regex, fully matched like Alertmanager's =~
    match: dict[str, str] = Field(min_length=1)
    channel: str = Field(pattern=CHANNEL)

    @field_validator("match")
    @classmethod
    def _matchers(cls, match: dict[str, str]) -> dict[str, str]:
        for label, pattern in match.items():
            if not LABEL_NAME.match(label):
                raise FieldError(label, "expected a Prometheus label name")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FieldError(label, f"expected a value or a regular expression ({exc})") from None
        return match

    @cached_property
    def _compiled(self) -> dict[str, re.Pattern[str]]:
        return {label: re.compile(pattern) for label, pattern in self.match.items()}

    def matches(self, labels: dict[str, str]) -> bool:
        return all(pattern.fullmatch(labels.get(label, "")) for label, pattern in self._compiled.items())


class FaxRoute(StrictModel):
    sender: str = Field(alias="from")
    channel: str = Field(pattern=CHANNEL)

    model_config = {**StrictModel.model_config, "populate_by_name": True}

    @field_validator("sender")
    @classmethod
    def _international(cls, sender: str) -> str:
        # Without a country code a number is ambiguous; with it, any common spelling normalizes.
        digits = e164(sender)[1:]
        if not sender.strip().startswith("+") or not 7 <= len(digits) <= 15 or re.search(r"[^\d\s()+.\-/]", sender):
            raise ValueError(f"expected an international number: + country code and number, e.g. +1 555 010 0142 (got {sender!r})")
        return sender


class SlackRoutes(StrictModel):
    default_channel: str = Field(pattern=CHANNEL)
    alerts: list[AlertRoute] = []
    faxes: list[FaxRoute] = []

    def alert_channel(self, labels: dict[str, str]) -> str:
        """First matching route's channel, else the default channel."""
        for route in self.alerts:
            if route.matches(labels):
                return route.channel
        return self.default_channel

    def fax_channel(self, sender: str) -> str | None:
        """The channel for a fax from ``sender``, or None: unlisted senders are dropped."""
        wanted = e164(sender)
        for route in self.faxes:
            if e164(route.sender) == wanted:
                return route.channel
        return None


class RoutesFile(StrictModel):
    # Alertmanager's route tree, validated by roles/alertmanager.
    alertmanager: Any = None
    slack: SlackRoutes


def load_routes(path: str | Path) -> SlackRoutes:
    """The `slack:` routes of a routes file; any problem is one ConfigFileError line."""
    return load_yaml_model(path, RoutesFile).slack
