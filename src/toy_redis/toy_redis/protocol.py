"""RESP: parsing client requests (multibulk and inline) and encoding replies (RESP2 and RESP3).

Requests are parsed the way Redis's networking.c does it, so that limits and protocol errors
carry Redis's wording: a client that breaks the protocol gets `-ERR Protocol error: ...` and is
closed after the replies to the commands it sent before the bad frame.
"""

from __future__ import annotations

import re
from io import BytesIO

PROTO_INLINE_MAX_SIZE = 64 * 1024
# Clients that have not authenticated yet may send only small frames (Redis 7.0 does the same).
UNAUTHENTICATED_MAX_MULTIBULK = 10
UNAUTHENTICATED_MAX_BULK = 16384
# A bulk argument at least this big that is not all in one read is copied into its own buffer as
# it arrives, so that a 512 MB value costs about 512 MB, not one copy for the reads and one joined.
BIG_ARG = 32 * 1024
LLONG_MAX = 2**63 - 1
LLONG_MIN = -(2**63)


class ProtocolError(Exception):
    """The client broke the protocol: reply with this message, then close the connection."""


def parse_int(raw: bytes) -> int | None:
    """Redis's string2ll: an exact decimal 64-bit integer (no sign '+', spaces or leading zeros)."""
    if len(raw) < 19 and raw.isdigit() and (raw[0] != 48 or len(raw) == 1):
        return int(raw)
    if raw.isdigit():
        if (raw[0] == 48 and len(raw) > 1) or len(raw) > 19:
            return None
    elif raw[:1] == b"-" and raw[1:].isdigit() and raw[1] != 48:
        if len(raw) > 20:
            return None
    else:
        return None
    value = int(raw)
    if value > LLONG_MAX or value < LLONG_MIN:
        return None
    return value


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"
_SPACE = b" \n\r\t\v\f"


def split_inline(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs: words, "double quoted" with escapes, or 'single quoted'; None if unbalanced."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = None  # 34 inside "double quotes", 39 inside 'single quotes'
        while True:
            if quote is not None:
                if i >= n:
                    return None
                ch = line[i]
                if quote == 34 and ch == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX \
                        and line[i + 3] in _HEX:
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif quote == 34 and ch == 92 and i + 1 < n:
                    i += 1
                    current += _ESCAPES.get(line[i], line[i : i + 1])
                elif quote == 39 and ch == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    current.append(39)
                elif ch == quote:
                    # A closing quote must be followed by a space or nothing.
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    current.append(ch)
            else:
                if i >= n:
                    break
                ch = line[i]
                if ch in _SPACE:
                    break
                if ch in (34, 39):
                    quote = ch
                else:
                    current.append(ch)
            i += 1
        args.append(bytes(current))


try:
    from hiredis import Reader as _HiredisReader

    if not hasattr(_HiredisReader, "has_data"):  # hiredis < 2.0
        _HiredisReader = None
except ImportError:
    _HiredisReader = None


# hiredis sizes a list for an aggregate as soon as it reads the count: a 13-byte `*2147483647\r\n`
# would make it allocate, and later free, 16 GB of pointers (seconds during which no client is
# served). A read holding anything that could be such a count goes to the Python parser, which
# allocates only for arguments that have arrived.
_BIG_AGGREGATE = re.compile(rb"[*%~>|][0-9]{6}")
_ARRAY_HEADER = [len(b"*%d\r\n" % n) for n in range(1024)]
_BULK_FRAMING = [len(b"$%d\r\n\r\n" % n) for n in range(65536)]


class RequestParser:
    """Incremental request parser for one connection.

    feed() returns the complete commands found so far (each a list of bytes arguments) and keeps
    the incomplete tail. Bytes are never decoded: arguments stay bytes end to end.
    """

    __slots__ = (
        "buffer", "max_bulk_len", "max_query_buffer", "reader", "partial", "partial_bytes",
        "big", "big_left", "big_skip",
    )

    def __init__(self, max_bulk_len: int = 512 * 1024 * 1024, max_query_buffer: int = 1024**3):
        self.buffer = b""
        self.max_bulk_len = max_bulk_len
        self.max_query_buffer = max_query_buffer
        self.reader = _HiredisReader() if _HiredisReader is not None else None
        # A command cut by the end of a read: (arguments so far, arguments still to come), and
        # how many of its bytes have been consumed.
        self.partial: tuple[list[bytes], int] | None = None
        self.partial_bytes = 0
        # A big argument arriving: its buffer, bytes still to come, and CRLF bytes to skip after.
        self.big: BytesIO | None = None
        self.big_left = 0
        self.big_skip = 0

    def _fast(self, data: bytes) -> list[list[bytes]] | None:
        """hiredis (C) parsing for the common case: a read holding only whole multibulk commands.

        Anything else (a frame cut by the read, inline commands, or a frame Redis would refuse)
        returns None and the read is parsed again by the Python parser below, which replies with
        Redis's exact protocol errors. hiredis refuses malformed lengths itself; element types are
        checked here.
        """
        reader = self.reader
        if _BIG_AGGREGATE.search(data) is not None:
            return None
        # hiredis accepts only minimal decimal lengths, so a frame's size on the wire is its
        # canonical size: if the parsed commands add up to the whole read, nothing was left half
        # parsed inside hiredis.
        total = 0
        try:
            reader.feed(data)
            commands = []
            while True:
                command = reader.gets()
                if command is False:
                    break
                if command.__class__ is not list or not command:
                    raise ValueError
                total += _ARRAY_HEADER[len(command)]
                for arg in command:
                    if arg.__class__ is not bytes:
                        raise ValueError
                    # IndexError for an argument too big for the table: left to the Python parser.
                    total += _BULK_FRAMING[len(arg)] + len(arg)
                commands.append(command)
        except Exception:
            self.reader = _HiredisReader()
            return None
        if total != len(data):
            self.reader = _HiredisReader()
            return None
        return commands

    def pending(self) -> int:
        """Bytes received and not yet part of a complete command."""
        return len(self.buffer) + self.partial_bytes

    def feed(self, data: bytes, authenticated: bool = True) -> tuple[list[list[bytes]], ProtocolError | None]:
        """Parse what has arrived; (commands, error). After an error the connection must close."""
        if (not self.buffer and self.partial is None and authenticated
                and data[:1] == b"*" and self.reader is not None):
            commands = self._fast(data)
            if commands is not None:
                return commands, None
        if self.big is not None:
            data = self._feed_big(data)
            if self.big is not None:
                if self.pending() > self.max_query_buffer:
                    self._reset()
                    return [], ProtocolError("Protocol error: query buffer limit reached")
                return [], None
        buf = self.buffer + data if self.buffer else data
        # A command cut by the end of the last read resumes where it stopped (its arguments so
        # far are kept), so a command with many arguments is not parsed again on every read.
        partial, self.partial = self.partial, None
        partial_bytes, self.partial_bytes = self.partial_bytes, 0
        commands: list[list[bytes]] = []
        pos, n = 0, len(buf)
        error = None
        find = buf.find
        frame = 0
        try:
            while pos < n or partial is not None:
                frame = pos
                if partial is not None:
                    args, remaining = partial
                    partial = None
                    frame = -partial_bytes
                    p = pos
                elif buf[pos] == 42:  # '*': multibulk
                    cr = find(b"\r", pos)
                    if cr < 0 or cr + 1 >= n:
                        if n - pos > PROTO_INLINE_MAX_SIZE:
                            raise ProtocolError("Protocol error: too big mbulk count string")
                        break
                    count = parse_int(buf[pos + 1 : cr])
                    if count is None or count > 2147483647:
                        raise ProtocolError("Protocol error: invalid multibulk length")
                    if count > UNAUTHENTICATED_MAX_MULTIBULK and not authenticated:
                        raise ProtocolError("Protocol error: unauthenticated multibulk length")
                    p = cr + 2
                    if count <= 0:
                        pos = p
                        continue
                    args, remaining = [], count
                else:
                    nl = find(b"\n", pos)
                    if nl < 0:
                        if n - pos > PROTO_INLINE_MAX_SIZE:
                            raise ProtocolError("Protocol error: too big inline request")
                        break
                    line = buf[pos:nl]
                    pos = nl + 1
                    args = split_inline(line)
                    if args is None:
                        raise ProtocolError("Protocol error: unbalanced quotes in request")
                    if args:
                        commands.append(args)
                    continue
                append = args.append
                while remaining:
                    cr = find(b"\r", p)
                    if cr < 0 or cr + 1 >= n:
                        if n - p > PROTO_INLINE_MAX_SIZE:
                            raise ProtocolError("Protocol error: too big bulk count string")
                        break
                    if buf[p] != 36:  # '$'
                        raise ProtocolError(f"Protocol error: expected '$', got '{chr(buf[p])}'")
                    size = parse_int(buf[p + 1 : cr])
                    if size is None or size < 0 or size > self.max_bulk_len:
                        raise ProtocolError("Protocol error: invalid bulk length")
                    if size > UNAUTHENTICATED_MAX_BULK and not authenticated:
                        raise ProtocolError("Protocol error: unauthenticated bulk length")
                    end = cr + 2 + size
                    if end + 2 > n:
                        if size >= BIG_ARG:
                            self._start_big(buf, cr + 2, size)
                            p = n
                        break
                    append(buf[cr + 2 : end])
                    p = end + 2
                    remaining -= 1
                if remaining:
                    # Keep the arguments read so far; a cut small one is parsed again from its '$'.
                    self.partial = (args, remaining)
                    self.partial_bytes = p - frame
                    pos = p
                    break
                commands.append(args)
                pos = p
        except ProtocolError as exc:
            error = exc
            self.partial, self.partial_bytes = None, 0
            pos = n
        rest = buf[pos:] if pos < n else b""
        self.buffer = rest
        if self.pending() > self.max_query_buffer:
            self._reset()
            error = error or ProtocolError("Protocol error: query buffer limit reached")
        return commands, error

    def _start_big(self, buf: bytes, start: int, size: int) -> None:
        """A big argument starts at buf[start:] and goes on past this read: buffer it on its own."""
        self.big = BytesIO()
        present = len(buf) - start
        taken = min(present, size)
        self.big.write(memoryview(buf)[start : start + taken])
        self.big_left = size - taken
        self.big_skip = 2 - (present - taken)

    def _feed_big(self, data: bytes) -> bytes:
        """Add a read to the big argument; once it is complete, append it to the cut command's
        arguments. Returns what follows the argument in this read."""
        taken = min(len(data), self.big_left)
        if taken:
            self.big.write(data if taken == len(data) else memoryview(data)[:taken])
            self.big_left -= taken
        skipped = min(len(data) - taken, self.big_skip)
        self.big_skip -= skipped
        self.partial_bytes += taken + skipped
        if self.big_left or self.big_skip:
            return b""
        args, remaining = self.partial
        # getvalue() hands over BytesIO's own buffer without a copy once the BytesIO is dropped.
        args.append(self.big.getvalue())
        self.big = None
        self.partial = (args, remaining - 1)
        return data[taken + skipped :]

    def _reset(self) -> None:
        self.buffer = b""
        self.partial, self.partial_bytes = None, 0
        self.big = None


# ---------------------------------------------------------------------------------------------
# Replies. Handlers return either ready bytes or one of these Python values, encoded per
# connection protocol version by encode().


class Status(str):
    """A simple string reply (+OK)."""


class ReplyError(Exception):
    """An error reply; `kind` labels toy_redis_errors_total."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind or message.split(" ", 1)[0].lower()


class Verbatim(bytes):
    """A RESP3 verbatim string (txt), a bulk string in RESP2."""


class SetReply(list):
    """A RESP3 set whose members need not be hashable (an array in RESP2)."""


OK = b"+OK\r\n"
QUEUED = b"+QUEUED\r\n"
NULL_BULK = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
NULL3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
_SMALL_INTS = [b":%d\r\n" % i for i in range(-1, 1025)]


def integer(value: int) -> bytes:
    if -1 <= value <= 1023:
        return _SMALL_INTS[value + 1]
    return b":%d\r\n" % value


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def error_line(message: str) -> bytes:
    # Error messages are one line: newlines would break the framing.
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def format_double(value: float) -> bytes:
    """Doubles as Redis prints them (%.17g, inf/-inf)."""
    if value == float("inf"):
        return b"inf"
    if value == float("-inf"):
        return b"-inf"
    if value == int(value) and abs(value) < 1e17:
        return b"%d" % int(value)
    return b"%.17g" % value


def encode(value, resp3: bool) -> bytes:
    """Encode a handler's Python reply value."""
    if value is None:
        return NULL3 if resp3 else NULL_BULK
    cls = value.__class__
    if cls is bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if cls is Status:
        return b"+" + value.encode() + b"\r\n"
    if cls is int:
        return integer(value)
    if cls is bool:
        if resp3:
            return b"#t\r\n" if value else b"#f\r\n"
        return ONE if value else ZERO
    if cls is str:
        return bulk(value.encode())
    if cls is float:
        if resp3:
            return b"," + format_double(value) + b"\r\n"
        return bulk(format_double(value))
    if cls is Verbatim:
        if resp3:
            return b"=%d\r\ntxt:%s\r\n" % (len(value) + 4, bytes(value))
        return bulk(bytes(value))
    if cls is list or cls is tuple:
        return b"*%d\r\n" % len(value) + b"".join([encode(item, resp3) for item in value])
    if cls is dict:
        parts = []
        for key, item in value.items():
            parts.append(encode(key, resp3))
            parts.append(encode(item, resp3))
        if resp3:
            return b"%%%d\r\n" % len(value) + b"".join(parts)
        return b"*%d\r\n" % (2 * len(value)) + b"".join(parts)
    if cls is set or cls is frozenset or cls is SetReply:
        marker = b"~" if resp3 else b"*"
        return marker + b"%d\r\n" % len(value) + b"".join([encode(item, resp3) for item in value])
    if isinstance(value, ReplyError):
        return error_line(value.message)
    raise TypeError(f"cannot encode reply of type {cls.__name__}")
