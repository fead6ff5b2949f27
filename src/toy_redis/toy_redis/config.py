"""toy-redis settings: defaults, a YAML file, then command-line flags, each checked the same way.

A bad value stops the server before it starts with one line naming the file (or flag) and key and
what was expected, e.g. ``/etc/toy-redis.yaml: maxmemory_policy: expected one of noeviction,
allkeys-lru, volatile-ttl, got 'lru'``.

This runs on the nodes, where only Debian's Python packages are installed, so it depends on
PyYAML alone (no pydantic there).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

POLICIES = ("noeviction", "allkeys-lru", "volatile-ttl")
FSYNC_MODES = ("always", "everysec", "no")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """One line: where (file or flag), key, and what was expected."""

    def __init__(self, source: str, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        super().__init__(f"{source}: {key}: {expected}" if key else f"{source}: {expected}")


@dataclass(frozen=True)
class Config:
    bind: str = "127.0.0.1"
    port: int = 6379
    requirepass_file: str | None = None
    maxclients: int = 10000
    maxmemory: int = 0
    maxmemory_policy: str = "noeviction"
    appendonly: bool = False
    appendfsync: str = "everysec"
    dir: str = "."
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 8080
    log_file: str | None = None
    log_level: str = "info"
    slowlog_log_slower_than_us: int = 10000
    slowlog_max_len: int = 128
    # Read from requirepass_file, never from the YAML or a flag (so it is not in a command line).
    requirepass: bytes | None = None


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _int_in(low: int, high: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"expected an integer in {low}..{high}, got {_describe(value)}"
        return None

    return check


def _one_of(choices):
    def check(value):
        if value not in choices:
            return f"expected one of {', '.join(choices)}, got {_describe(value)}"
        return None

    return check


def _address(value):
    if not isinstance(value, str):
        return f"expected an IP address, got {_describe(value)}"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"expected an IP address, got {value!r}"
    return None


def _path_or_none(value):
    if value is not None and (not isinstance(value, str) or not value):
        return f"expected a file path, got {_describe(value)}"
    return None


def _bool(value):
    if not isinstance(value, bool):
        return f"expected true or false, got {_describe(value)}"
    return None


def _directory(value):
    if not isinstance(value, str) or not value:
        return f"expected a directory path, got {_describe(value)}"
    return None


CHECKS = {
    "bind": _address,
    "port": _int_in(0, 65535),  # 0: any free port (the "started" log line says which)
    "requirepass_file": _path_or_none,
    "maxclients": _int_in(1, 1_000_000),
    "maxmemory": _int_in(0, 2**63 - 1),
    "maxmemory_policy": _one_of(POLICIES),
    "appendonly": _bool,
    "appendfsync": _one_of(FSYNC_MODES),
    "dir": _directory,
    "metrics_bind": _address,
    "metrics_port": _int_in(0, 65535),
    "log_file": _path_or_none,
    "log_level": _one_of(LOG_LEVELS),
    "slowlog_log_slower_than_us": _int_in(-1, 2**63 - 1),
    "slowlog_max_len": _int_in(0, 1_000_000),
}


def validate(values: dict[str, Any], source: str, base: Config = Config()) -> Config:
    """Check each key and value; return base with them applied. Raises ConfigError."""
    for key, value in values.items():
        check = CHECKS.get(key)
        if check is None:
            raise ConfigError(source, key, "unknown key")
        problem = check(value)
        if problem:
            raise ConfigError(source, key, problem)
    return replace(base, **values)


def load_file(path: str) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"invalid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping of settings, got {type(data).__name__}")
    return validate(data, path)


def read_password(config: Config, source: str) -> Config:
    """Load requirepass from requirepass_file (first line, newline stripped)."""
    if config.requirepass_file is None:
        return config
    path = config.requirepass_file
    try:
        with open(path, "rb") as handle:
            password = handle.read().split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as exc:
        raise ConfigError(source, "requirepass_file", f"cannot read {path} ({exc.strerror})") from None
    if not password:
        raise ConfigError(source, "requirepass_file", f"{path} is empty: expected the password on its first line")
    return replace(config, requirepass=password)


def check_paths(config: Config, source: str) -> None:
    """Settings that name places on disk: checked at start so a typo fails fast."""
    if config.appendonly and not os.path.isdir(config.dir):
        raise ConfigError(source, "dir", f"expected an existing directory for the append-only file, got {config.dir!r}")
    if config.log_file is not None:
        parent = os.path.dirname(os.path.abspath(config.log_file))
        if not os.path.isdir(parent):
            raise ConfigError(source, "log_file", f"expected a file in an existing directory, got {config.log_file!r}")


FIELD_NAMES = [f.name for f in fields(Config) if f.name != "requirepass"]
