"""Command implementations with Redis 7.0 semantics, replies and error wording.

Each handler takes (conn, argv) with argv the raw bytes arguments, and returns either ready RESP
bytes (a top-level bytes object is always sent as is: wrap data in bulk()) or a Python value that
protocol.encode() turns into RESP2 or RESP3 for that connection. Errors are
raised as ReplyError with Redis's text.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from . import info
from .glob import matcher
from .keyspace import now_ms
from .protocol import (
    LLONG_MAX,
    LLONG_MIN,
    NULL3,
    NULL_BULK,
    OK,
    ONE,
    ZERO,
    ReplyError,
    SetReply,
    Status,
    Verbatim,
    bulk,
    integer,
    parse_int,
)

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

NOT_INTEGER = "ERR value is not an integer or out of range"
SYNTAX = "ERR syntax error"


def to_int(raw: bytes, message: str = NOT_INTEGER) -> int:
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
    return ReplyError(f"ERR invalid expire time in '{name}' command")


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


# -- connection --------------------------------------------------------------------------------


@command("ping", -1, "fast", group="connection", summary="Returns the server's liveliness response.")
def cmd_ping(conn, argv):
    if len(argv) > 2:
        raise ReplyError("ERR wrong number of arguments for 'ping' command", "wrong_arity")
    if len(argv) == 2:
        return bulk(argv[1])
    return b"+PONG\r\n"


@command("echo", 2, "fast", group="connection", summary="Returns the given string.")
def cmd_echo(conn, argv):
    return bulk(argv[1])


@command("select", 2, "loading stale fast", group="connection", summary="Changes the selected database.")
def cmd_select(conn, argv):
    index = to_int(argv[1], "ERR value is not an integer or out of range")
    if index != 0:
        raise ReplyError("ERR DB index is out of range")
    return OK


@command("quit", -1, "no_auth fast", group="connection", summary="Closes the connection.")
def cmd_quit(conn, argv):
    conn.close_after_reply = True
    return OK


@command("auth", -2, "no_auth fast", group="connection", summary="Authenticates the connection.")
def cmd_auth(conn, argv):
    if len(argv) > 3:
        raise ReplyError(SYNTAX)
    server = conn.server
    if len(argv) == 2 and not server.config.requirepass:
        raise ReplyError(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    username = argv[1] if len(argv) == 3 else b"default"
    password = argv[-1]
    if not server.check_password(username, password):
        raise ReplyError("WRONGPASS invalid username-password pair or user is disabled.", "auth")
    conn.authenticated = True
    return OK


@command("hello", -1, "no_auth fast", group="connection", summary="Handshakes with the server.")
def cmd_hello(conn, argv):
    server = conn.server
    version = None
    if len(argv) >= 2:
        version = parse_int(argv[1])
        if version is None:
            raise ReplyError("ERR Protocol version is not an integer or out of range")
        if version < 2 or version > 3:
            raise ReplyError("NOPROTO unsupported protocol version", "noproto")
    name = None
    authenticated = conn.authenticated
    i = 2
    while i < len(argv):
        option = argv[i].lower()
        more = len(argv) - i - 1
        if option == b"auth" and more >= 2:
            if not server.check_password(argv[i + 1], argv[i + 2]):
                raise ReplyError("WRONGPASS invalid username-password pair or user is disabled.", "auth")
            authenticated = True
            i += 3
        elif option == b"setname" and more >= 1:
            name = argv[i + 1]
            check_client_name(name)
            i += 2
        else:
            raise ReplyError(f"ERR Syntax error in HELLO option '{argv[i].decode(errors='replace')}'")
    if not authenticated:
        raise ReplyError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
            "<proto> AUTH <user> <pass> option can be used to authenticate the client and select "
            "the RESP protocol version at the same time",
            "noauth",
        )
    conn.authenticated = True
    if name is not None:
        conn.name = name
    if version is not None:
        conn.resp3 = version == 3
    return {
        "server": "redis",
        "version": server.redis_version,
        "proto": 3 if conn.resp3 else 2,
        "id": conn.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


@command("reset", 1, "no_auth fast", group="connection", summary="Resets the connection.")
def cmd_reset(conn, argv):
    conn.resp3 = False
    conn.name = b""
    conn.authenticated = not conn.server.config.requirepass
    return b"+RESET\r\n"


_BAD_NAME = re.compile(rb"[^!-~]")


def check_client_name(name: bytes) -> None:
    if _BAD_NAME.search(name):
        raise ReplyError("ERR Client names cannot contain spaces, newlines or special characters.")


@command("client", -2, "", group="connection", summary="A container for client connection commands.")
def cmd_client(conn, argv):
    sub = argv[1].lower()
    n = len(argv)
    conn.last_command = "client|" + sub.decode(errors="replace")
    if sub == b"kill":
        return client_kill(conn, argv)
    if sub == b"id" and n == 2:
        return conn.id
    if sub == b"getname" and n == 2:
        return bulk_or_null(conn, conn.name or None)
    if sub == b"setname" and n == 3:
        check_client_name(argv[2])
        conn.name = argv[2]
        return OK
    if sub == b"info" and n == 2:
        return Verbatim(conn.describe().encode() + b"\n")
    if sub == b"list":
        if n == 2:
            return Verbatim(b"".join(c.describe().encode() + b"\n" for c in conn.server.clients.values()))
        if n >= 4 and argv[2].lower() == b"type":
            kind = argv[3].lower()
            if kind not in (b"normal", b"master", b"replica", b"pubsub"):
                raise ReplyError(f"ERR Unknown client type '{argv[3].decode(errors='replace')}'")
            if kind != b"normal":
                return Verbatim(b"")
            return Verbatim(b"".join(c.describe().encode() + b"\n" for c in conn.server.clients.values()))
        if n >= 4 and argv[2].lower() == b"id":
            wanted = set()
            for raw in argv[3:]:
                value = parse_int(raw)
                if value is None or value <= 0:
                    raise ReplyError("ERR Invalid client ID")
                wanted.add(value)
            return Verbatim(b"".join(
                c.describe().encode() + b"\n" for c in conn.server.clients.values() if c.id in wanted
            ))
        raise ReplyError(SYNTAX)
    if sub == b"help":
        return [
            Status(line)
            for line in (
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST [TYPE <normal|master|replica|pubsub>]",
                "LIST [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "HELP",
                "    Print this help.",
            )
        ]
    if sub in (b"id", b"getname", b"setname", b"info"):
        raise ReplyError(f"ERR wrong number of arguments for 'client|{sub.decode()}' command", "wrong_arity")
    raise unknown_subcommand(argv)


CLIENT_TYPES = (b"normal", b"master", b"slave", b"replica", b"pubsub")


def client_kill(conn, argv):
    """CLIENT KILL addr (old form: +OK or an error) or CLIENT KILL <filter> <value> ... (a count)."""
    if len(argv) == 2:
        raise ReplyError("ERR wrong number of arguments for 'client|kill' command", "wrong_arity")
    if len(argv) == 3:
        wanted, skipme = {"addr": argv[2].decode(errors="replace")}, False
    elif len(argv) > 3 and len(argv) % 2 == 0:
        wanted, skipme = client_kill_filters(argv[2:])
    else:
        raise ReplyError(SYNTAX)
    killed = 0
    for client in list(conn.server.clients.values()):
        if (client is conn and skipme) or any(getattr(client, name) != value for name, value in wanted.items()):
            continue
        killed += 1
        if client is conn:
            conn.close_after_reply = True
        else:
            client.kill()
    if len(argv) == 3:
        if not killed:
            raise ReplyError("ERR No such client")
        return OK
    return killed


def client_kill_filters(pairs) -> tuple[dict, bool]:
    """Redis 7.0's CLIENT KILL filters as {Connection attribute: value}, and SKIPME."""
    wanted, skipme = {}, True
    for option, value in zip(pairs[::2], pairs[1::2]):
        option = option.lower()
        if option == b"id":
            number = parse_int(value)
            if number is None or number < 1:
                raise ReplyError("ERR client-id should be greater than 0")
            wanted["id"] = number
        elif option == b"type":
            if value.lower() not in CLIENT_TYPES:
                raise ReplyError(f"ERR Unknown client type '{value.decode(errors='replace')}'")
            if value.lower() != b"normal":
                wanted["id"] = 0  # every toy-redis client is a normal one: none matches
        elif option in (b"addr", b"laddr"):
            wanted[option.decode()] = value.decode(errors="replace")
        elif option == b"user":
            if value != b"default":
                raise ReplyError(f"ERR No such user '{value.decode(errors='replace')}'")
        elif option == b"skipme" and value.lower() in (b"yes", b"no"):
            skipme = value.lower() == b"yes"
        else:
            raise ReplyError(SYNTAX)
    return wanted, skipme


def unknown_subcommand(argv) -> ReplyError:
    return ReplyError(
        f"ERR unknown subcommand '{argv[1][:128].decode(errors='replace')}'. "
        f"Try {argv[0].decode(errors='replace').upper()} HELP."
    )


# -- strings -----------------------------------------------------------------------------------


@command("get", 2, "readonly fast", (1, 1, 1), "string", "Returns the string value of a key.")
def cmd_get(conn, argv):
    # Keyspace.get() inlined: GET is the hottest command.
    db = conn.db
    key = argv[1]
    value = db.data.get(key)
    if value is not None and key in db.expires:
        value = db.peek(key)
    if value is None:
        db.misses += 1
        return NULL3 if conn.resp3 else NULL_BULK
    db.hits += 1
    if db.lru:
        db.data.move_to_end(key)
    return b"$%d\r\n%s\r\n" % (len(value), value)


def parse_set_options(argv, start, name, allow_get, allow_persist, allow_nx_xx, check_expire=True):
    """Redis's parseExtendedStringArgumentsOrReply; returns (nx, xx, get, keepttl, persist, expire_at)."""
    nx = xx = get = keepttl = persist = False
    expire_at = None
    expire_seen = False
    j = start
    n = len(argv)
    while j < n:
        option = argv[j].upper()
        following = argv[j + 1] if j + 1 < n else None
        if option == b"NX" and allow_nx_xx and not xx:
            nx = True
        elif option == b"XX" and allow_nx_xx and not nx:
            xx = True
        elif option == b"GET" and allow_get:
            get = True
        elif option == b"KEEPTTL" and not allow_persist and not expire_seen and not persist:
            keepttl = True
        elif option == b"PERSIST" and allow_persist and not expire_seen and not keepttl:
            persist = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and not keepttl and not persist and not expire_seen \
                and following is not None:
            expire_seen = True
            j += 1
            unit = 1000 if option in (b"EX", b"EXAT") else 1
            relative = option in (b"EX", b"PX")
            expire_at = (option, following, unit, relative)
        else:
            raise ReplyError(SYNTAX)
        j += 1
    if expire_at is not None and check_expire:
        _, raw, unit, relative = expire_at
        expire_at = expire_at_ms(raw, unit, relative, name)
    return nx, xx, get, keepttl, persist, expire_at


@command("set", -3, "write denyoom", (1, 1, 1), "string", "Sets the string value of a key.")
def cmd_set(conn, argv):
    db = conn.db
    if len(argv) == 3:
        db.set(argv[1], argv[2])
        return OK
    nx, xx, get, keepttl, _, expire_at = parse_set_options(argv, 3, "set", True, False, True)
    key = argv[1]
    old = db.peek(key)
    if (nx and old is not None) or (xx and old is None):
        return bulk_or_null(conn, old) if get else null(conn)
    db.set(key, argv[2], expire_at, keepttl)
    if expire_at is not None and expire_at <= now_ms():
        db.delete(key)
    if get:
        return bulk_or_null(conn, old)
    return OK


@command("setnx", 3, "write denyoom fast", (1, 1, 1), "string", "Set the string value of a key only when the key doesn't exist.")
def cmd_setnx(conn, argv):
    if conn.db.peek(argv[1]) is not None:
        return ZERO
    conn.db.set(argv[1], argv[2])
    return ONE


@command("setex", 4, "write denyoom", (1, 1, 1), "string", "Sets the string value and expiration time of a key.")
def cmd_setex(conn, argv):
    when = expire_at_ms(argv[2], 1000, True, "setex")
    conn.db.set(argv[1], argv[3], when)
    return OK


@command("psetex", 4, "write denyoom", (1, 1, 1), "string", "Sets both string value and expiration time in milliseconds of a key.")
def cmd_psetex(conn, argv):
    when = expire_at_ms(argv[2], 1, True, "psetex")
    conn.db.set(argv[1], argv[3], when)
    return OK


@command("getset", 3, "write denyoom fast", (1, 1, 1), "string", "Returns the previous string value of a key after setting it to a new value.")
def cmd_getset(conn, argv):
    old = conn.db.get(argv[1])
    conn.db.set(argv[1], argv[2])
    return bulk_or_null(conn, old)


@command("getdel", 2, "write fast", (1, 1, 1), "string", "Returns the string value of a key after deleting the key.")
def cmd_getdel(conn, argv):
    value = conn.db.get(argv[1])
    if value is not None:
        conn.db.delete(argv[1])
    return bulk_or_null(conn, value)


@command("getex", -2, "write fast", (1, 1, 1), "string", "Returns the string value of a key after setting its expiration time.")
def cmd_getex(conn, argv):
    db = conn.db
    key = argv[1]
    # Redis checks the expire time only once it knows the key exists.
    options = parse_set_options(argv, 2, "getex", False, True, False, check_expire=False)
    value = db.get(key)
    if value is None:
        return null(conn)
    persist, expire = options[4], options[5]
    expire_at = None if expire is None else expire_at_ms(expire[1], expire[2], expire[3], "getex")
    if expire_at is not None:
        if expire_at <= now_ms():
            db.delete(key)
        else:
            db.set_expire(key, expire_at)
    elif persist:
        db.persist(key)
    return bulk_or_null(conn, value)


@command("mget", -2, "readonly fast", (1, -1, 1), "string", "Atomically returns the string values of one or more keys.")
def cmd_mget(conn, argv):
    get = conn.db.get
    nil = NULL3 if conn.resp3 else NULL_BULK
    parts = [b"*%d\r\n" % (len(argv) - 1)]
    for key in argv[1:]:
        value = get(key)
        parts.append(nil if value is None else b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


@command("mset", -3, "write denyoom", (1, -1, 2), "string", "Atomically creates or modifies the string values of one or more keys.")
def cmd_mset(conn, argv):
    if len(argv) % 2 == 0:
        raise ReplyError("ERR wrong number of arguments for 'mset' command", "wrong_arity")
    db = conn.db
    for i in range(1, len(argv), 2):
        db.set(argv[i], argv[i + 1])
    return OK


@command("msetnx", -3, "write denyoom", (1, -1, 2), "string", "Atomically modifies the string values of one or more keys only when all keys don't exist.")
def cmd_msetnx(conn, argv):
    if len(argv) % 2 == 0:
        raise ReplyError("ERR wrong number of arguments for 'msetnx' command", "wrong_arity")
    db = conn.db
    if any(db.peek(argv[i]) is not None for i in range(1, len(argv), 2)):
        return ZERO
    for i in range(1, len(argv), 2):
        db.set(argv[i], argv[i + 1])
    return ONE


def check_size(size: int) -> None:
    if size > MAX_STRING_SIZE:
        raise ReplyError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")


@command("append", 3, "write denyoom fast", (1, 1, 1), "string", "Appends a string to the value of a key. Creates the key if it doesn't exist.")
def cmd_append(conn, argv):
    db = conn.db
    old = db.peek(argv[1])
    if old is None:
        db.set(argv[1], argv[2])
        return integer(len(argv[2]))
    check_size(len(old) + len(argv[2]))
    value = old + argv[2]
    db.set(argv[1], value, keep_ttl=True)
    return integer(len(value))


@command("strlen", 2, "readonly fast", (1, 1, 1), "string", "Returns the length of a string value.")
def cmd_strlen(conn, argv):
    value = conn.db.get(argv[1])
    return integer(0 if value is None else len(value))


@command("getrange", 4, "readonly", (1, 1, 1), "string", "Returns a substring of the string stored at a key.")
def cmd_getrange(conn, argv):
    start = to_int(argv[2])
    end = to_int(argv[3])
    value = conn.db.get(argv[1])
    if value is None:
        return b"$0\r\n\r\n"
    size = len(value)
    if start < 0 and end < 0 and start > end:
        return b"$0\r\n\r\n"
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = max(size + end, 0)
    if end >= size:
        end = size - 1
    if start > end or size == 0:
        return b"$0\r\n\r\n"
    return bulk(value[start : end + 1])


@command("setrange", 4, "write denyoom", (1, 1, 1), "string", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.")
def cmd_setrange(conn, argv):
    offset = to_int(argv[2])
    patch = argv[3]
    if offset < 0:
        raise ReplyError("ERR offset is out of range")
    db = conn.db
    old = db.peek(argv[1])
    if old is None:
        if not patch:
            return ZERO
        check_size(offset + len(patch))
        value = bytes(offset) + patch
        db.set(argv[1], value)
        return integer(len(value))
    if not patch:
        return integer(len(old))
    check_size(offset + len(patch))
    if len(old) < offset:
        old = old + bytes(offset - len(old))
    value = old[:offset] + patch + old[offset + len(patch) :]
    db.set(argv[1], value, keep_ttl=True)
    return integer(len(value))


def incr_by(conn, key: bytes, delta: int) -> bytes:
    db = conn.db
    data = db.data
    old = data.get(key)
    if old is not None and key in db.expires:
        old = db.peek(key)
    if old is None:
        current = 0
    elif len(old) < 19 and old.isdigit() and (old[0] != 48 or len(old) == 1):
        current = int(old)
    else:
        current = parse_int(old) if len(old) <= 20 else None
        if current is None:
            raise ReplyError(NOT_INTEGER)
    result = current + delta
    if result > LLONG_MAX or result < LLONG_MIN:
        raise ReplyError("ERR increment or decrement would overflow")
    value = b"%d" % result
    if old is None:
        db.set(key, value)
    else:
        # The hot path of counters: overwrite in place, keeping the TTL.
        db.used_memory += len(value) - len(old)
        data[key] = value
        if db.lru:
            data.move_to_end(key)
    return b":" + value + b"\r\n"


@command("incr", 2, "write denyoom fast", (1, 1, 1), "string", "Increments the integer value of a key by one.")
def cmd_incr(conn, argv):
    # incr_by() inlined for the commonest counter update.
    db = conn.db
    data = db.data
    key = argv[1]
    old = data.get(key)
    if old is None or key in db.expires:
        return incr_by(conn, key, 1)
    last = db.last_counter
    if last[0] is old:
        # The very bytes object INCR stored last: known to be a valid integer, no need to parse.
        current = last[1]
    elif len(old) < 19 and old.isdigit() and (old[0] != 48 or len(old) == 1):
        current = int(old)
    else:
        return incr_by(conn, key, 1)
    if current < 0 or current >= 10**18:
        return incr_by(conn, key, 1)
    value = b"%d" % (current + 1)
    if len(value) != len(old):  # a non-negative counter plus one grows by one digit at most
        db.used_memory += 1
    data[key] = value
    db.last_counter = (value, current + 1)
    if db.lru:
        data.move_to_end(key)
    return b":" + value + b"\r\n"


@command("decr", 2, "write denyoom fast", (1, 1, 1), "string", "Decrements the integer value of a key by one.")
def cmd_decr(conn, argv):
    return incr_by(conn, argv[1], -1)


@command("incrby", 3, "write denyoom fast", (1, 1, 1), "string", "Increments the integer value of a key by a number.")
def cmd_incrby(conn, argv):
    return incr_by(conn, argv[1], to_int(argv[2]))


@command("decrby", 3, "write denyoom fast", (1, 1, 1), "string", "Decrements a number from the integer value of a key.")
def cmd_decrby(conn, argv):
    delta = to_int(argv[2])
    if delta == LLONG_MIN:
        raise ReplyError("ERR decrement would overflow")
    return incr_by(conn, argv[1], -delta)


_FLOAT = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf(?:inity)?", re.IGNORECASE)


LONG_DOUBLE_MAX_EXPONENT = 16384  # x87 80-bit long double: values below 2**16384
# Either infinity: never stored, always "increment would produce NaN or Infinity".
INFINITY = float("inf")


def to_long_double(value: Fraction) -> Fraction | None:
    """Round an exact number to the 64-bit significand of the C long double Redis computes with
    (round half to even); None if it overflows to infinity."""
    if value == 0:
        return value
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    significand = round(magnitude * Fraction(2) ** (63 - exponent))
    rounded = Fraction(significand) * Fraction(2) ** (exponent - 63)
    if rounded >= Fraction(2) ** LONG_DOUBLE_MAX_EXPONENT:
        return None
    return rounded if value > 0 else -rounded


def parse_float(raw: bytes) -> Fraction | None:
    """Redis's string2ld (strtold): decimal text with no surrounding spaces; nan refused."""
    if not raw or len(raw) > 5120 or not _FLOAT.fullmatch(raw):
        return None
    text = raw.decode().lower().lstrip("+")
    if text.lstrip("-").startswith("inf"):
        return INFINITY
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    # strtold reports ERANGE (Redis: not a valid float) outside the long double range; no need
    # to build a 10**huge fraction to know that.
    if number and not -4951 <= number.adjusted() <= 4933:
        return None
    return to_long_double(Fraction(number))


def format_long_double(value: Fraction) -> bytes:
    """Redis's ld2string(LD_STR_HUMAN): printf("%.17Lf") of the binary value, trailing zeros cut."""
    scaled = round(abs(value) * 10**17)
    whole, fraction = divmod(scaled, 10**17)
    # Decimal prints integers of any size (int's str() stops at 4300 digits).
    text = f"{Decimal(whole):f}.{fraction:017d}".rstrip("0").rstrip(".")
    # Redis prints a negative number that rounds to zero as "0", not "-0".
    return ("-" + text if value < 0 and text != "0" else text).encode()


@command("incrbyfloat", 3, "write denyoom fast", (1, 1, 1), "string", "Increment the floating point value of a key by a number.")
def cmd_incrbyfloat(conn, argv):
    db = conn.db
    key = argv[1]
    old = db.peek(key)
    current = Fraction(0) if old is None else parse_float(old)
    if current is None:
        raise ReplyError("ERR value is not a valid float")
    delta = parse_float(argv[2])
    if delta is None:
        raise ReplyError("ERR value is not a valid float")
    result = None if INFINITY in (current, delta) else to_long_double(current + delta)
    if result is None:
        raise ReplyError("ERR increment would produce NaN or Infinity")
    text = format_long_double(result)
    db.set(key, text, keep_ttl=True)
    return bulk(text)


# -- keyspace ----------------------------------------------------------------------------------


@command("del", -2, "write", (1, -1, 1), "keyspace", "Deletes one or more keys.")
def cmd_del(conn, argv):
    delete = conn.db.delete
    return integer(sum(1 for key in argv[1:] if delete(key)))


@command("unlink", -2, "write fast", (1, -1, 1), "keyspace", "Asynchronously deletes one or more keys.")
def cmd_unlink(conn, argv):
    return cmd_del(conn, argv)


@command("exists", -2, "readonly fast", (1, -1, 1), "keyspace", "Determines whether one or more keys exist.")
def cmd_exists(conn, argv):
    exists = conn.db.exists
    return integer(sum(1 for key in argv[1:] if exists(key)))


@command("type", 2, "readonly fast", (1, 1, 1), "keyspace", "Determines the type of value stored at a key.")
def cmd_type(conn, argv):
    return b"+string\r\n" if conn.db.exists(argv[1]) else b"+none\r\n"


def move_key(db, source: bytes, target: bytes) -> None:
    value = db.peek(source)
    when = db.ttl_ms(source)
    db.delete(source)
    db.delete(target)
    db.set(target, value, when)


@command("rename", 3, "write", (1, 2, 1), "keyspace", "Renames a key and overwrites the destination.")
def cmd_rename(conn, argv):
    db = conn.db
    if db.peek(argv[1]) is None:
        raise ReplyError("ERR no such key")
    if argv[1] != argv[2]:
        move_key(db, argv[1], argv[2])
    return OK


@command("renamenx", 3, "write fast", (1, 2, 1), "keyspace", "Renames a key only when the target key name doesn't exist.")
def cmd_renamenx(conn, argv):
    db = conn.db
    if db.peek(argv[1]) is None:
        raise ReplyError("ERR no such key")
    if argv[1] == argv[2] or db.peek(argv[2]) is not None:
        return ZERO
    move_key(db, argv[1], argv[2])
    return ONE


@command("copy", -3, "write denyoom", (1, 2, 1), "keyspace", "Copies the value of a key to a new key.")
def cmd_copy(conn, argv):
    replace = False
    j = 3
    while j < len(argv):
        option = argv[j].lower()
        if option == b"replace":
            replace = True
        elif option == b"db" and j + 1 < len(argv):
            index = to_int(argv[j + 1])
            if index != 0:
                raise ReplyError("ERR DB index is out of range")
            j += 1
        else:
            raise ReplyError(SYNTAX)
        j += 1
    source, target = argv[1], argv[2]
    if source == target:
        raise ReplyError("ERR source and destination objects are the same")
    db = conn.db
    value = db.peek(source)
    if value is None:
        return ZERO
    if db.peek(target) is not None:
        if not replace:
            return ZERO
        db.delete(target)
    db.set(target, value, db.ttl_ms(source))
    return ONE


# KEYS looks at this many names between checks of its time slice.
KEYS_STEP = 256
KEYS_SLICE_S = 0.005


@command("keys", 2, "readonly", group="keyspace", summary="Returns all key names that match a pattern.")
def cmd_keys(conn, argv):
    return keys_job(conn.db, argv[1])


def keys_job(db, pattern: bytes):
    """KEYS in slices of KEYS_SLICE_S, other clients served in between (see Server.advance).

    It walks the names present when it started; a key deleted or expired before its slice is
    left out, a key added meanwhile is not seen (Redis's KEYS blocks everyone instead). The
    reply goes out in parts.
    """
    match = yield from matcher(pattern)
    names = list(db.data)
    found: list[bytes] = []
    deadline = time.perf_counter() + KEYS_SLICE_S
    for start in range(0, len(names), KEYS_STEP):
        if time.perf_counter() > deadline:
            yield
            deadline = time.perf_counter() + KEYS_SLICE_S
        step = names[start : start + KEYS_STEP]
        if match is not None:
            step = filter(match, step)
        now = now_ms()
        found += [key for key in step if db.is_live(key, now)]
    del names
    yield b"*%d\r\n" % len(found)
    for start in range(0, len(found), KEYS_STEP):
        yield b"".join([b"$%d\r\n%s\r\n" % (len(key), key) for key in found[start : start + KEYS_STEP]])
    return b""


_CURSOR = re.compile(rb"[+-]?[0-9]+")


@command("scan", -2, "readonly", group="keyspace", summary="Iterates over the key names in the database.")
def cmd_scan(conn, argv):
    # Redis reads the cursor with strtoul: a sign is allowed and a negative number wraps around.
    if not _CURSOR.fullmatch(argv[1]) or abs(int(argv[1])) >= 2**64:
        raise ReplyError("ERR invalid cursor")
    cursor = int(argv[1]) % 2**64
    count = 10
    pattern = b"*"
    wanted_type = None
    j = 2
    while j < len(argv):
        option = argv[j].lower()
        more = len(argv) - j - 1
        if option == b"count" and more >= 1:
            count = to_int(argv[j + 1])
            if count < 1:
                raise ReplyError(SYNTAX)
            j += 2
        elif option == b"match" and more >= 1:
            pattern = argv[j + 1]
            j += 2
        elif option == b"type" and more >= 1:
            wanted_type = argv[j + 1].lower()
            j += 2
        else:
            raise ReplyError(SYNTAX)
    return scan_job(conn.db, cursor, count, pattern, wanted_type)


def scan_job(db, cursor: int, count: int, pattern: bytes, wanted_type: bytes | None):
    match = yield from matcher(pattern)
    next_cursor, batch = db.scan(cursor, count)
    keys = [k for k in batch if (match is None or match(k)) and db.exists(k)]
    if wanted_type is not None and wanted_type != b"string":
        keys = []
    return [b"%d" % next_cursor, keys]


@command("randomkey", 1, "readonly", group="keyspace", summary="Returns a random key name from the database.")
def cmd_randomkey(conn, argv):
    return bulk_or_null(conn, conn.db.random_key())


@command("dbsize", 1, "readonly fast", group="server", summary="Returns the number of keys in the database.")
def cmd_dbsize(conn, argv):
    return integer(len(conn.db))


def flush(conn, argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"async", b"sync")):
        raise ReplyError(SYNTAX)
    conn.db.flush()
    return OK


@command("flushdb", -1, "write", group="server", summary="Remove all keys from the current database.")
def cmd_flushdb(conn, argv):
    return flush(conn, argv)


@command("flushall", -1, "write", group="server", summary="Removes all keys from all databases.")
def cmd_flushall(conn, argv):
    return flush(conn, argv)


# -- expiry ------------------------------------------------------------------------------------


def expire_generic(conn, argv, unit_ms: int, relative: bool):
    nx = xx = gt = lt = False
    for raw in argv[3:]:
        option = raw.lower()
        if option == b"nx":
            nx = True
        elif option == b"xx":
            xx = True
        elif option == b"gt":
            gt = True
        elif option == b"lt":
            lt = True
        else:
            raise ReplyError(f"ERR Unsupported option {raw.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise ReplyError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise ReplyError("ERR GT and LT options at the same time are not compatible")
    name = argv[0].decode(errors="replace").lower()
    when = to_int(argv[2])
    if unit_ms == 1000:
        if when > LLONG_MAX // 1000 or when < -(LLONG_MAX // 1000):
            raise expire_error(name)
        when *= 1000
    base = now_ms() if relative else 0
    if when > LLONG_MAX - base:
        raise expire_error(name)
    when += base
    db = conn.db
    key = argv[1]
    if db.peek(key) is None:
        return ZERO
    current = db.ttl_ms(key)
    if nx and current is not None:
        return ZERO
    if xx and current is None:
        return ZERO
    if gt and (current is None or when <= current):
        return ZERO
    if lt and current is not None and when >= current:
        return ZERO
    if when <= now_ms():
        db.delete(key)
        db.expired_keys += 1
    else:
        db.set_expire(key, when)
    return ONE


@command("expire", -3, "write fast", (1, 1, 1), "keyspace", "Sets the expiration time of a key in seconds.")
def cmd_expire(conn, argv):
    return expire_generic(conn, argv, 1000, True)


@command("pexpire", -3, "write fast", (1, 1, 1), "keyspace", "Sets the expiration time of a key in milliseconds.")
def cmd_pexpire(conn, argv):
    return expire_generic(conn, argv, 1, True)


@command("expireat", -3, "write fast", (1, 1, 1), "keyspace", "Sets the expiration time of a key to a Unix timestamp.")
def cmd_expireat(conn, argv):
    return expire_generic(conn, argv, 1000, False)


@command("pexpireat", -3, "write fast", (1, 1, 1), "keyspace", "Sets the expiration time of a key to a Unix milliseconds timestamp.")
def cmd_pexpireat(conn, argv):
    return expire_generic(conn, argv, 1, False)


def ttl_generic(conn, key: bytes, absolute: bool, in_ms: bool) -> bytes:
    db = conn.db
    if db.peek(key) is None:
        return integer(-2)
    when = db.ttl_ms(key)
    if when is None:
        return integer(-1)
    if absolute:
        return integer(when if in_ms else when // 1000)
    left = max(when - now_ms(), 0)
    return integer(left if in_ms else (left + 500) // 1000)


@command("ttl", 2, "readonly fast", (1, 1, 1), "keyspace", "Returns the expiration time in seconds of a key.")
def cmd_ttl(conn, argv):
    return ttl_generic(conn, argv[1], False, False)


@command("pttl", 2, "readonly fast", (1, 1, 1), "keyspace", "Returns the expiration time in milliseconds of a key.")
def cmd_pttl(conn, argv):
    return ttl_generic(conn, argv[1], False, True)


@command("expiretime", 2, "readonly fast", (1, 1, 1), "keyspace", "Returns the expiration time of a key as a Unix timestamp.")
def cmd_expiretime(conn, argv):
    return ttl_generic(conn, argv[1], True, False)


@command("pexpiretime", 2, "readonly fast", (1, 1, 1), "keyspace", "Returns the expiration time of a key as a Unix milliseconds timestamp.")
def cmd_pexpiretime(conn, argv):
    return ttl_generic(conn, argv[1], True, True)


@command("persist", 2, "write fast", (1, 1, 1), "keyspace", "Removes the expiration time of a key.")
def cmd_persist(conn, argv):
    db = conn.db
    if db.peek(argv[1]) is None:
        return ZERO
    return ONE if db.persist(argv[1]) else ZERO


# -- server ------------------------------------------------------------------------------------


@command("time", 1, "fast", group="server", summary="Returns the server time.")
def cmd_time(conn, argv):
    now = time.time_ns() // 1000
    return [b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)]


@command("info", -1, "", group="server", summary="Returns information and statistics about the server.")
def cmd_info(conn, argv):
    sections = [a.decode(errors="replace").lower() for a in argv[1:]]
    return Verbatim(info.render(conn.server, sections).encode())


@command("config", -2, "", group="server", summary="A container for server configuration commands.")
def cmd_config(conn, argv):
    sub = argv[1].lower()
    conn.last_command = "config|" + sub.decode(errors="replace")
    server = conn.server
    if sub == b"get":
        if len(argv) < 3:
            raise ReplyError("ERR wrong number of arguments for 'config|get' command", "wrong_arity")
        return server.config_get(argv[2:])
    if sub == b"set":
        if len(argv) < 4 or len(argv) % 2:
            raise ReplyError("ERR wrong number of arguments for 'config|set' command", "wrong_arity")
        server.config_set(argv[2:])
        return OK
    if sub == b"resetstat":
        if len(argv) != 2:
            raise ReplyError("ERR wrong number of arguments for 'config|resetstat' command", "wrong_arity")
        server.reset_stats()
        return OK
    if sub == b"help":
        return [Status(line) for line in (
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "HELP",
            "    Print this help.",
        )]
    raise unknown_subcommand(argv)


@command("command", -1, "loading stale", group="server", summary="Returns detailed information about all commands.")
def cmd_command(conn, argv):
    if len(argv) == 1:
        return [command_info(c) for c in COMMANDS.values()]
    sub = argv[1].lower()
    if sub == b"count" and len(argv) == 2:
        return len(COMMANDS)
    if sub == b"info":
        return [command_info(COMMANDS[n.lower()]) if n.lower() in COMMANDS else None for n in argv[2:]]
    if sub == b"docs":
        wanted = [n.lower() for n in argv[2:]] or list(COMMANDS)
        return {c.name: command_docs(c) for n in wanted if (c := COMMANDS.get(n)) is not None}
    if sub == b"list" and len(argv) == 2:
        return [c.name for c in COMMANDS.values()]
    if sub == b"getkeys" and len(argv) >= 3:
        cmd = COMMANDS.get(argv[2].lower())
        if cmd is None:
            raise ReplyError("ERR Invalid command specified")
        if (cmd.arity > 0 and len(argv) - 2 != cmd.arity) or len(argv) - 2 < -cmd.arity:
            raise ReplyError("ERR Invalid number of arguments specified for command")
        keys = cmd.keys(argv[2:])
        if not keys:
            raise ReplyError("ERR The command has no key arguments")
        return keys
    if sub == b"help":
        return [Status("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
                Status("COUNT"), Status("    Return the total number of commands in this Redis server."),
                Status("DOCS [<command-name> ...]"), Status("    Return documentation details about multiple Redis commands."),
                Status("INFO [<command-name> ...]"), Status("    Return details about multiple Redis commands."),
                Status("LIST"), Status("    Return a list of all commands in this Redis server."),
                Status("HELP"), Status("    Print this help.")]
    if sub in (b"count", b"list"):
        raise ReplyError(f"ERR wrong number of arguments for 'command|{sub.decode()}' command", "wrong_arity")
    raise unknown_subcommand(argv)


# Flags as COMMAND INFO reports them.
_FLAG_NAMES = {"write": "write", "readonly": "readonly", "denyoom": "denyoom", "fast": "fast",
               "no_auth": "no_auth", "loading": "loading", "stale": "stale"}


def command_info(cmd: Command) -> list:
    flags = {Status(_FLAG_NAMES[f]) for f in cmd.flags if f in _FLAG_NAMES}
    categories = [Status("@" + cmd.group)]
    if "write" in cmd.flags:
        categories.append(Status("@write"))
    if "readonly" in cmd.flags:
        categories.append(Status("@read"))
    if "fast" in cmd.flags:
        categories.append(Status("@fast"))
    return [cmd.name, cmd.arity, flags, cmd.first_key, cmd.last_key, cmd.step, categories, [], [], []]


def _reply_value(raw):
    """command_docs.json's encoding of RESP3 types back into reply values."""
    if isinstance(raw, dict):
        if raw.keys() == {"~"}:
            return SetReply(_reply_value(item) for item in raw["~"])
        if raw.keys() == {"+"}:
            return Status(raw["+"])
        return {key: _reply_value(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_reply_value(item) for item in raw]
    return raw


# Redis 7.0.15's COMMAND DOCS for these commands (see tests/toy_redis/test_command_docs.py).
DOCS = _reply_value(json.loads((Path(__file__).parent / "command_docs.json").read_text()))


def command_docs(cmd: Command) -> dict:
    return DOCS[cmd.name]


@command("slowlog", -2, "", group="server", summary="A container for slow log commands.")
def cmd_slowlog(conn, argv):
    sub = argv[1].lower()
    conn.last_command = "slowlog|" + sub.decode(errors="replace")
    slowlog = conn.server.slowlog
    if sub == b"len" and len(argv) == 2:
        return len(slowlog)
    if sub == b"reset" and len(argv) == 2:
        slowlog.clear()
        return OK
    if sub == b"get" and len(argv) <= 3:
        count = 10
        if len(argv) == 3:
            count = parse_int(argv[2])
            if count is None or count < -1:
                raise ReplyError("ERR count should be greater than or equal to -1")
            if count == -1:
                count = len(slowlog)
        return [list(entry) for entry in list(slowlog)[:count]]
    if sub == b"help":
        return [Status("SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
                Status("GET [<count>]"), Status("    Return top <count> entries from the slowlog (default: 10, -1 mean all)."),
                Status("LEN"), Status("    Return the length of the slowlog."),
                Status("RESET"), Status("    Reset the slowlog."),
                Status("HELP"), Status("    Print this help.")]
    if sub in (b"len", b"reset", b"get"):
        raise ReplyError(f"ERR wrong number of arguments for 'slowlog|{sub.decode()}' command", "wrong_arity")
    raise unknown_subcommand(argv)


@command("bgrewriteaof", 1, "", group="server", summary="Asynchronously rewrites the append-only file to disk.")
def cmd_bgrewriteaof(conn, argv):
    aof = conn.server.aof
    if aof is None:
        raise ReplyError("ERR Background append only file rewriting is not possible: appendonly is off")
    if aof.rewrite_pid is not None:
        raise ReplyError("ERR Background append only file rewriting already in progress")
    aof.start_rewrite(conn.db)
    return b"+Background append only file rewriting started\r\n"


@command("shutdown", -1, "loading stale", group="server", summary="Synchronously saves the database(s) to disk and shuts down the Redis server.")
def cmd_shutdown(conn, argv):
    for raw in argv[1:]:
        if raw.lower() not in (b"nosave", b"save", b"now", b"force", b"abort"):
            raise ReplyError(SYNTAX)
    if any(raw.lower() == b"abort" for raw in argv[1:]):
        raise ReplyError("ERR No shutdown in progress.")
    conn.server.request_shutdown("shutdown_command")
    conn.close_after_reply = True
    # Redis sends no reply to a successful SHUTDOWN: the connection just closes.
    return b""
