"""Keyspace commands: DEL, EXISTS, TYPE, RENAME, COPY, KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSH*."""

from __future__ import annotations

import re
import time

from .. import errors
from ..glob import matcher
from ..keyspace import now_ms
from ..protocol import (
    OK,
    ONE,
    ZERO,
    ReplyError,
    integer,
)
from .base import (
    bulk_or_null,
    command,
    to_int,
)


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
        raise ReplyError(errors.NO_SUCH_KEY)
    if argv[1] != argv[2]:
        move_key(db, argv[1], argv[2])
    return OK


@command("renamenx", 3, "write fast", (1, 2, 1), "keyspace", "Renames a key only when the target key name doesn't exist.")
def cmd_renamenx(conn, argv):
    db = conn.db
    if db.peek(argv[1]) is None:
        raise ReplyError(errors.NO_SUCH_KEY)
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
                raise ReplyError(errors.DB_INDEX_OUT_OF_RANGE)
            j += 1
        else:
            raise ReplyError(errors.SYNTAX)
        j += 1
    source, target = argv[1], argv[2]
    if source == target:
        raise ReplyError(errors.SAME_OBJECT)
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
        raise ReplyError(errors.INVALID_CURSOR)
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
                raise ReplyError(errors.SYNTAX)
            j += 2
        elif option == b"match" and more >= 1:
            pattern = argv[j + 1]
            j += 2
        elif option == b"type" and more >= 1:
            wanted_type = argv[j + 1].lower()
            j += 2
        else:
            raise ReplyError(errors.SYNTAX)
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
        raise ReplyError(errors.SYNTAX)
    conn.db.flush()
    return OK


@command("flushdb", -1, "write", group="server", summary="Remove all keys from the current database.")
def cmd_flushdb(conn, argv):
    return flush(conn, argv)


@command("flushall", -1, "write", group="server", summary="Removes all keys from all databases.")
def cmd_flushall(conn, argv):
    return flush(conn, argv)
