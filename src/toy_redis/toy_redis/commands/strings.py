"""String commands: GET, SET and its variants, ranges, counters (INCR*, INCRBYFLOAT)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .. import errors
from ..keyspace import now_ms
from ..protocol import (
    LLONG_MAX,
    LLONG_MIN,
    NULL3,
    NULL_BULK,
    OK,
    ONE,
    ZERO,
    ReplyError,
    bulk,
    integer,
    parse_int,
)
from .base import (
    MAX_STRING_SIZE,
    bulk_or_null,
    command,
    expire_at_ms,
    null,
    to_int,
)


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
            raise ReplyError(errors.SYNTAX)
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
        raise ReplyError(errors.wrong_arity("mset"), "wrong_arity")
    db = conn.db
    for i in range(1, len(argv), 2):
        db.set(argv[i], argv[i + 1])
    return OK


@command("msetnx", -3, "write denyoom", (1, -1, 2), "string", "Atomically modifies the string values of one or more keys only when all keys don't exist.")
def cmd_msetnx(conn, argv):
    if len(argv) % 2 == 0:
        raise ReplyError(errors.wrong_arity("msetnx"), "wrong_arity")
    db = conn.db
    if any(db.peek(argv[i]) is not None for i in range(1, len(argv), 2)):
        return ZERO
    for i in range(1, len(argv), 2):
        db.set(argv[i], argv[i + 1])
    return ONE


def check_size(size: int) -> None:
    if size > MAX_STRING_SIZE:
        raise ReplyError(errors.STRING_TOO_LONG)


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
        raise ReplyError(errors.OFFSET_OUT_OF_RANGE)
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
            raise ReplyError(errors.NOT_INTEGER)
    result = current + delta
    if result > LLONG_MAX or result < LLONG_MIN:
        raise ReplyError(errors.INCR_OVERFLOW)
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
        raise ReplyError(errors.DECR_OVERFLOW)
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
        raise ReplyError(errors.NOT_FLOAT)
    delta = parse_float(argv[2])
    if delta is None:
        raise ReplyError(errors.NOT_FLOAT)
    result = None if INFINITY in (current, delta) else to_long_double(current + delta)
    if result is None:
        raise ReplyError(errors.NAN_OR_INFINITY)
    text = format_long_double(result)
    db.set(key, text, keep_ttl=True)
    return bulk(text)
