"""CONFIG GET and CONFIG SET: the settings a running server shows under Redis's names, and the
ones it can change, with Redis 7.0's error texts. Which settings of the config file CONFIG SET may
change, and their bounds, come from the settings model (config.Config), and so do the names CONFIG
GET shows for them; Redis's settings the model does not have are listed here (LIVE, FIXED)."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import errors, logs
from .aof import AUTO_REWRITE_MIN_SIZE, FILENAME as AOF_FILENAME
from .config import bounds, choices, redis_names
from .glob import matcher
from .protocol import ReplyError

MIN_BUFFER_LIMIT = 1024 * 1024
# Redis's loglevel names, as toy-redis's logging levels.
LOG_LEVELS = {"debug": "DEBUG", "verbose": "INFO", "notice": "INFO", "info": "INFO", "warning": "WARNING"}


class Refused(Exception):
    """A CONFIG SET value that cannot be used; the reason as Redis words it."""


def parse_memory(raw: str) -> int | None:
    """Redis's memtoull: 100, 1k, 1kb, 1m, 1mb, 1g, 1gb (k=1000, kb=1024)."""
    text = raw.strip().lower()
    units = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    digits = text.rstrip("kmgb")
    unit = text[len(digits):]
    if not digits.isdigit() or unit not in units:
        return None
    return int(digits) * units[unit]


def integer(low: int, high: int):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise Refused("argument couldn't be parsed into an integer") from None
        if not low <= value <= high:
            raise Refused(f"argument must be between {low} and {high} inclusive")
        return value

    return parse


def memory(minimum: int = 0):
    def parse(raw: str) -> int:
        value = parse_memory(raw)
        if value is None:
            raise Refused("argument must be a memory value")
        if value < minimum:
            raise Refused("argument must be a memory value of at least 1mb")
        return value

    return parse


def one_of(choices, shown: str | None = None):
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise Refused("argument(s) must be one of the following: " + (shown or ", ".join(choices)))
        return raw.lower()

    return parse


def output_limit(raw: str) -> int:
    words = raw.split()
    if len(words) != 4 or words[0].lower() != "normal" or parse_memory(words[1]) is None:
        raise Refused("argument must be 'normal <hard limit> 0 0'")
    return parse_memory(words[1]) or 2**63


def _set_aof(attribute: str):
    def apply(server, value) -> None:
        if server.aof is not None:
            setattr(server.aof, attribute, value)

    return apply


@dataclass(frozen=True)
class Live:
    """How a setting lives on a running server: its current value, and how CONFIG SET changes it
    (``parse`` only for Redis's settings that the settings model does not have)."""

    read: Callable[[Any], object]
    apply: Callable[[Any, Any], None] | None = None
    parse: Callable[[str], Any] | None = None


# By Redis's name. A setting of the model that is not here is shown as the config file set it.
LIVE = {
    "maxclients": Live(lambda server: server.maxclients, lambda server, value: setattr(server, "maxclients", value)),
    "timeout": Live(lambda server: server.timeout, lambda server, value: setattr(server, "timeout", value)),
    "maxmemory": Live(lambda server: server.maxmemory, lambda server, value: setattr(server, "maxmemory", value)),
    "maxmemory-policy": Live(lambda server: server.db.policy, lambda server, value: server.db.set_policy(value)),
    "appendonly": Live(lambda server: server.aof is not None),
    "appendfsync": Live(lambda server: server.aof.fsync_mode if server.aof else server.config.appendfsync,
                        _set_aof("fsync_mode")),
    "dir": Live(lambda server: os.path.abspath(server.config.dir)),
    "slowlog-log-slower-than": Live(lambda server: server.slowlog_slower_than_us,
                                    lambda server, value: setattr(server, "slowlog_slower_than_us", value)),
    "slowlog-max-len": Live(lambda server: server.slowlog.maxlen,
                            lambda server, value: setattr(server, "slowlog", deque(server.slowlog, maxlen=value))),
    # Redis's settings that toy-redis's config file does not have.
    "loglevel": Live(lambda server: logging.getLevelName(logs.LOGGER.level).lower(),
                     lambda server, value: logs.LOGGER.setLevel(LOG_LEVELS[value]),
                     one_of(LOG_LEVELS, "debug, verbose, notice, warning")),
    "proto-max-bulk-len": Live(lambda server: server.proto_max_bulk_len,
                               lambda server, value: setattr(server, "proto_max_bulk_len", value),
                               memory(MIN_BUFFER_LIMIT)),
    "client-query-buffer-limit": Live(lambda server: server.client_query_buffer_limit,
                                      lambda server, value: setattr(server, "client_query_buffer_limit", value),
                                      memory(MIN_BUFFER_LIMIT)),
    "client-output-buffer-limit": Live(
        lambda server: f"normal {server.client_output_buffer_limit} 0 0 replica 0 0 0 pubsub 0 0 0",
        lambda server, value: setattr(server, "client_output_buffer_limit", value), output_limit),
    "hz": Live(lambda server: server.hz),
    "auto-aof-rewrite-min-size": Live(lambda server: server.aof.min_rewrite_size if server.aof else AUTO_REWRITE_MIN_SIZE,
                                      _set_aof("min_rewrite_size"), memory()),
}
# Redis's settings shown with what toy-redis does (no snapshots, one database, one append-only
# file), which cannot be set. requirepass is known, so that CONFIG SET refuses it as immutable,
# and never shown.
FIXED = {
    "appendfilename": AOF_FILENAME, "save": "", "databases": "1", "auto-aof-rewrite-percentage": "100",
    "requirepass": "",
}
# Settings of the file whose CONFIG SET text is a memory value (10mb) rather than an integer.
MEMORY_VALUES = {"maxmemory"}


def _parser(field: str, name: str):
    """How CONFIG SET reads a setting of the config file: from its type and bounds there."""
    if choices(field):
        return one_of(choices(field))
    low, high = bounds(field)
    if name in MEMORY_VALUES:
        read = memory()

        def parse(raw: str) -> int:
            value = read(raw)
            if not low <= value <= high:
                raise Refused(f"argument must be between {low} and {high} inclusive")
            return value

        return parse
    return integer(low, high)


def _settable() -> dict:
    """Redis's name -> (parse the text into a value or raise Refused, apply it to the server)."""
    table = {name: (_parser(field, name), LIVE[name].apply) for field, name in redis_names(settable_only=True).items()}
    if any(apply is None for _, apply in table.values()):
        raise RuntimeError("a setting the model marks settable has no way to apply it in LIVE")
    table.update({name: (live.parse, live.apply) for name, live in LIVE.items() if live.parse})
    return table


SETTABLE = _settable()


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def values(server) -> dict[str, str]:
    """Every parameter CONFIG GET knows, as text (requirepass included: callers hide it): the
    settings model's, then Redis's own that the model does not have."""
    shown = {}
    for field, name in redis_names().items():
        shown[name] = _text(LIVE[name].read(server) if name in LIVE else getattr(server.config, field))
    shown.update({name: _text(live.read(server)) for name, live in LIVE.items() if name not in shown})
    return {**shown, **FIXED}


def get(server, patterns: list[bytes]):
    """CONFIG GET: a generator (see Server.advance), since a long pattern is read in slices."""
    shown = values(server)
    shown.pop("requirepass")  # a secret: never sent back
    result = {}
    for pattern in patterns:
        match = yield from matcher(pattern.lower())
        for name, value in shown.items():
            if match is None or match(name.encode()):
                result[name] = value
    return result


def set_values(server, pairs: list[bytes]) -> None:
    """CONFIG SET name value [name value ...]: all are checked before any is applied."""
    updates = {}
    known = values(server)
    for i in range(0, len(pairs), 2):
        name = pairs[i].decode(errors="replace").lower()
        raw = pairs[i + 1].decode(errors="replace")
        if name not in SETTABLE:
            if name in known:
                raise ReplyError(errors.config_set_failed(name, "can't set immutable config"))
            raise ReplyError(errors.config_set_unknown(name))
        parse, apply = SETTABLE[name]
        try:
            updates[name] = (parse(raw), apply)
        except Refused as refused:
            raise ReplyError(errors.config_set_failed(name, str(refused))) from None
    for name, (value, apply) in updates.items():
        apply(server, value)
        logs.info("config_set", name=name)
