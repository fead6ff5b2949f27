"""What every command module shares: the Command record, the registry, argument helpers.

Each handler takes (conn, argv) with argv the raw bytes arguments, and returns either ready RESP
bytes (a top-level bytes object is always sent as is: wrap data in bulk()), a Python value that
protocol.encode() turns into RESP2 or RESP3 for that connection, or a generator for work done in
slices (see Server.advance). Errors are raised as ReplyError with Redis's text (errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import errors
from ..keyspace import now_ms
from ..protocol import LLONG_MAX, NULL3, NULL_BULK, ReplyError, parse_int

MAX_STRING_SIZE = 512 * 1024 * 1024


@dataclass
class Command:
    name: str
    handler: object
    arity: int
    flags: frozenset[str]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    subcommands: dict[str, "Command"] = field(default_factory=dict)
    # Per-command statistics, read by INFO commandstats and the metrics collector.
    calls: int = 0
    failed_calls: int = 0
    seconds_total: float = 0.0
    latency_buckets: list[int] = field(default_factory=list)

    def __post_init__(self):
        # Flags the dispatcher tests on every call, as plain attributes.
        self.is_write = "write" in self.flags
        self.denyoom = "denyoom" in self.flags
        self.no_auth = "no_auth" in self.flags

    def keys(self, argv: list[bytes]) -> list[bytes]:
        if self.first_key == 0:
            return []
        last = self.last_key if self.last_key >= 0 else len(argv) + self.last_key
        return argv[self.first_key : last + 1 : self.step]


COMMANDS: dict[bytes, Command] = {}
# The subcommands toy-redis has, of the commands that have some.
SUBCOMMANDS = {
    "client": {"id", "getname", "setname", "info", "list", "kill", "help"},
    "config": {"get", "set", "resetstat", "help"},
    "command": {"count", "docs", "info", "list", "getkeys", "help"},
    "slowlog": {"get", "len", "reset", "help"},
}


def command(name, arity, flags="", keys=(0, 0, 0), group="generic", summary=""):
    def register(handler):
        COMMANDS[name.encode()] = Command(
            name, handler, arity, frozenset(flags.split()), *keys, group=group, summary=summary
        )
        return handler

    return register


# -- shared helpers ----------------------------------------------------------------------------
def to_int(raw: bytes, message: str = errors.NOT_INTEGER) -> int:
    value = parse_int(raw)
    if value is None:
        raise ReplyError(message)
    return value


def null(conn) -> bytes:
    return NULL3 if conn.resp3 else NULL_BULK


def bulk_or_null(conn, value):
    if value is None:
        return NULL3 if conn.resp3 else NULL_BULK
    return b"$%d\r\n%s\r\n" % (len(value), value)


def expire_error(name: str) -> ReplyError:
    return ReplyError(errors.invalid_expire(name))


def expire_at_ms(raw: bytes, unit_ms: int, relative: bool, name: str) -> int:
    """Redis's getExpireMillisecondsOrReply for SET/GETEX/SETEX: positive times only."""
    value = to_int(raw)
    if value <= 0 or (unit_ms == 1000 and value > LLONG_MAX // 1000):
        raise expire_error(name)
    value *= unit_ms
    if relative:
        value += now_ms()
    if value <= 0 or value > LLONG_MAX:
        raise expire_error(name)
    return value


def unknown_subcommand(argv) -> ReplyError:
    return ReplyError(errors.unknown_subcommand(argv[0], argv[1]))
