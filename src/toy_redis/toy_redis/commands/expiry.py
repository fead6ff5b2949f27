"""Expiry commands: EXPIRE and its variants, TTL and its variants, PERSIST."""

from __future__ import annotations

from functools import partial

from .. import errors
from ..keyspace import now_ms
from ..protocol import (
    LLONG_MAX,
    ONE,
    ZERO,
    ReplyError,
    integer,
)
from .base import (
    command,
    expire_error,
    to_int,
)


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
            raise ReplyError(errors.unsupported_option(raw))
    if nx and (xx or gt or lt):
        raise ReplyError(errors.NX_WITH_XX_GT_LT)
    if gt and lt:
        raise ReplyError(errors.GT_WITH_LT)
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


# EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: milliseconds per unit, and whether relative to now.
for _name, _unit_ms, _relative in (("expire", 1000, True), ("pexpire", 1, True),
                                   ("expireat", 1000, False), ("pexpireat", 1, False)):
    command(_name, -3, "write fast", (1, 1, 1), "keyspace")(
        partial(expire_generic, unit_ms=_unit_ms, relative=_relative))


def ttl_generic(conn, argv, absolute: bool, in_ms: bool) -> bytes:
    db = conn.db
    key = argv[1]
    if db.peek(key) is None:
        return integer(-2)
    when = db.ttl_ms(key)
    if when is None:
        return integer(-1)
    if absolute:
        return integer(when if in_ms else when // 1000)
    left = max(when - now_ms(), 0)
    return integer(left if in_ms else (left + 500) // 1000)


# TTL, PTTL, EXPIRETIME, PEXPIRETIME: absolute time or time left, milliseconds or seconds.
for _name, _absolute, _in_ms in (("ttl", False, False), ("pttl", False, True),
                                 ("expiretime", True, False), ("pexpiretime", True, True)):
    command(_name, 2, "readonly fast", (1, 1, 1), "keyspace")(partial(ttl_generic, absolute=_absolute, in_ms=_in_ms))


@command("persist", 2, "write fast", (1, 1, 1), "keyspace", "Removes the expiration time of a key.")
def cmd_persist(conn, argv):
    db = conn.db
    if db.peek(argv[1]) is None:
        return ZERO
    return ONE if db.persist(argv[1]) else ZERO
