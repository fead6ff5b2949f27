"""Value types that settings files, roles and the alerts compiler share, each with one grammar.

    Duration   "30s", "5m", "1h30m", "15d": Prometheus's grammar (units largest first, each once)
    ByteSize   "512MB", "20GB": Prometheus's size grammar (its --storage.tsdb.retention.size)
    Percent    a number above 0 and below 100
    Positive   a number above 0
    Port       a TCP port, 1..65535
    HostPort   "0.0.0.0:9000": an address and a Port

Each is a pydantic ``Annotated`` type: a field declared with it is checked on validation, and a
bad value becomes a one-line ConfigError through homelab.config.model_from_data.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

# Prometheus's model.ParseDuration: units from largest to smallest, each at most once.
_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
_DURATION_PART = re.compile(r"(\d+)(ms|[ywdhms])")
_UNIT_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
# Prometheus's units.ParseBase2Bytes as its retention.size flag accepts them.
_BYTE_SIZE = re.compile(r"[0-9]+(B|KB|MB|GB|TB|PB|EB)")


def _check_duration(value: str) -> str:
    if not value or not _DURATION.fullmatch(value):
        raise ValueError("expected a duration like 30s, 5m, 1h30m or 15d (units largest first, each once)")
    return value


def seconds(duration: str) -> float:
    """A validated Duration in seconds, e.g. to compare a timeout with its interval."""
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(duration))


def duration_text(total_seconds: float) -> str:
    """Whole seconds as a Duration ("1h30m"), hours being the largest unit written."""
    total = int(total_seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def _check_byte_size(value: str) -> str:
    if not _BYTE_SIZE.fullmatch(value):
        raise ValueError("expected a size like 512MB or 20GB (B, KB, MB, GB, TB, PB or EB)")
    return value


def _check_percent(value: float) -> float:
    if not 0 < value < 100:
        raise ValueError("expected a percent above 0 and below 100")
    return value


def _check_positive(value: float) -> float:
    if not value > 0:
        raise ValueError("expected a number above 0")
    return value


PORT_MIN, PORT_MAX = 1, 65535
# The port a URL of each scheme means when it names none (RFC 9110, section 4.2); such a URL omits it.
SCHEME_PORTS = {"http": 80, "https": 443}


def check_host_port(value: str) -> str:
    """``value`` if it is address:port with a port in 1..65535 (HostPort's validator)."""
    address, _, port = value.rpartition(":")
    if not address or " " in address or not port.isdigit() or not PORT_MIN <= int(port) <= PORT_MAX:
        raise ValueError(f"expected address:port with a port in {PORT_MIN}..{PORT_MAX}, e.g. 0.0.0.0:8000")
    return value


def port_of(host_port: str) -> int:
    """The port of a validated HostPort."""
    return int(host_port.rpartition(":")[2])


Duration = Annotated[str, AfterValidator(_check_duration)]
ByteSize = Annotated[str, AfterValidator(_check_byte_size)]
Percent = Annotated[float, AfterValidator(_check_percent)]
Positive = Annotated[float, AfterValidator(_check_positive)]
Port = Annotated[int, Field(ge=PORT_MIN, le=PORT_MAX)]
HostPort = Annotated[str, AfterValidator(check_host_port)]
