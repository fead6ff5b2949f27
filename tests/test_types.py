"""The shared value types: each accepts what the program reading the value accepts, and no more."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from homelab.types import (
    PORT_MAX,
    PORT_MIN,
    ByteSize,
    Duration,
    HostPort,
    Percent,
    Port,
    duration_text,
    port_of,
    seconds,
)


class Values(BaseModel):
    duration: Duration | None = None
    size: ByteSize | None = None
    percent: Percent | None = None
    port: Port | None = None
    listen: HostPort | None = None


def refused(**value) -> bool:
    try:
        Values(**value)
    except ValidationError:
        return True
    return False


# Prometheus's model.ParseDuration (prometheus/common model/time.go): units from largest to
# smallest, each at most once; ms is the smallest.
@pytest.mark.parametrize("text, expected_seconds", [
    ("0s", 0), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("15d", 15 * 86400), ("2w", 14 * 86400),
    ("1y", 365 * 86400), ("1500ms", 1.5), ("1h1m1s1ms", 3661.001),
])
def test_prometheus_durations_are_accepted_with_their_length(text, expected_seconds):
    assert Values(duration=text).duration == text
    assert seconds(text) == pytest.approx(expected_seconds)


@pytest.mark.parametrize("text", ["", "30", "5 m", "30m1h", "5m5m", "1.5h", "-5m", "1h 30m", "5M", "s"])
def test_other_durations_are_refused(text):
    assert refused(duration=text)


@pytest.mark.parametrize("total", [0, 1, 59, 60, 61, 3599, 3600, 5400, 86400 + 61])
def test_duration_text_round_trips(total):
    text = duration_text(total)
    assert not refused(duration=text)
    assert seconds(text) == total


def test_sizes_percent_ports():
    assert not refused(size="20GB") and refused(size="20G") and refused(size="GB")
    assert not refused(percent=0.5) and refused(percent=0) and refused(percent=100)
    assert not refused(port=PORT_MIN) and not refused(port=PORT_MAX)
    assert refused(port=PORT_MIN - 1) and refused(port=PORT_MAX + 1)


@pytest.mark.parametrize("text, port", [("0.0.0.0:8000", 8000), ("[::]:1", 1), ("127.0.0.1:65535", 65535)])
def test_host_port(text, port):
    assert Values(listen=text).listen == text and port_of(text) == port


@pytest.mark.parametrize("text", [":8000", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:65536", "a b:80", "host:http"])
def test_bad_host_port_is_refused(text):
    assert refused(listen=text)
