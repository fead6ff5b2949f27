"""CONFIG GET and CONFIG SET: the settings a running server shows under Redis's names, and the
ones it can change, with Redis 7.0's error texts. Which settings of the config file CONFIG SET may
change, and their bounds, come from the settings model (config.Config). `save` is shown
with what toy-redis does (no snapshots) and cannot be set."""

from __future__ import annotations

import logging
import os
from collections import deque

from . import errors, logs
from .config import Config, bounds, choices
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


# How each setting CONFIG SET may change takes effect on the running server, by Redis's name.
APPLY = {
    "maxmemory": lambda server, value: setattr(server, "maxmemory", value),
    "maxmemory-policy": lambda server, value: server.db.set_policy(value),
    "maxclients": lambda server, value: setattr(server, "maxclients", value),
    "timeout": lambda server, value: setattr(server, "timeout", value),
    "slowlog-log-slower-than": lambda server, value: setattr(server, "slowlog_slower_than_us", value),
    "slowlog-max-len": lambda server, value: setattr(server, "slowlog", deque(server.slowlog, maxlen=value)),
    "appendfsync": _set_aof("fsync_mode"),
    "proto-max-bulk-len": lambda server, value: setattr(server, "proto_max_bulk_len", value),
    "client-query-buffer-limit": lambda server, value: setattr(server, "client_query_buffer_limit", value),
    "client-output-buffer-limit": lambda server, value: setattr(server, "client_output_buffer_limit", value),
    "auto-aof-rewrite-min-size": _set_aof("min_rewrite_size"),
    "loglevel": lambda server, value: logs.LOGGER.setLevel(LOG_LEVELS[value]),
}
# Redis's settings that toy-redis's config file does not have, and how their text is read.
RUNTIME_ONLY = {
    "proto-max-bulk-len": memory(MIN_BUFFER_LIMIT),
    "client-query-buffer-limit": memory(MIN_BUFFER_LIMIT),
    "client-output-buffer-limit": output_limit,
    "auto-aof-rewrite-min-size": memory(),
    "loglevel": one_of(LOG_LEVELS, "debug, verbose, notice, warning"),
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
    table = {}
    for field_name, field in Config.model_fields.items():
        name = (field.json_schema_extra or {}).get("config_set")
        if name:
            table[name] = (_parser(field_name, name), APPLY[name])
    for name, parse in RUNTIME_ONLY.items():
        table[name] = (parse, APPLY[name])
    return table


SETTABLE = _settable()


def values(server) -> dict[str, str]:
    """Every parameter CONFIG GET knows, as text (requirepass included: callers hide it)."""
    aof, config = server.aof, server.config
    return {
        "bind": config.bind,
        "port": str(server.port),
        "tls-port": str(server.tls_port),
        "tls-cert-file": config.tls_cert_file or "",
        "tls-key-file": config.tls_key_file or "",
        "tls-ca-cert-file": config.tls_ca_cert_file or "",
        "tls-auth-clients": config.tls_auth_clients,
        "maxclients": str(server.maxclients),
        "maxmemory": str(server.maxmemory),
        "maxmemory-policy": server.db.policy,
        "appendonly": "yes" if aof is not None else "no",
        "appendfsync": aof.fsync_mode if aof is not None else config.appendfsync,
        "appendfilename": "appendonly.aof",
        "dir": os.path.abspath(config.dir),
        "save": "",
        "databases": "1",
        "timeout": str(server.timeout),
        "loglevel": logging.getLevelName(logs.LOGGER.level).lower(),
        "logfile": config.log_file or "",
        "slowlog-log-slower-than": str(server.slowlog_slower_than_us),
        "slowlog-max-len": str(server.slowlog.maxlen),
        "proto-max-bulk-len": str(server.proto_max_bulk_len),
        "client-query-buffer-limit": str(server.client_query_buffer_limit),
        "client-output-buffer-limit": f"normal {server.client_output_buffer_limit} 0 0 replica 0 0 0 pubsub 0 0 0",
        "hz": str(server.hz),
        "auto-aof-rewrite-min-size": str(aof.min_rewrite_size if aof else 64 * 1024 * 1024),
        "auto-aof-rewrite-percentage": "100",
        "requirepass": "",
    }


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
