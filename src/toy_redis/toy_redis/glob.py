"""Glob patterns (KEYS, SCAN MATCH, CONFIG GET) read exactly as Redis 7.0's stringmatchlen reads
them, matched in time bounded by the key and the pattern rather than exponential in the stars.

Every element but `*` matches exactly one byte, so a pattern is a list of fixed-length segments
separated by stars. The first segment must match at the start of the key, the last at its end,
and each one in between at the leftmost place after the one before: taking the leftmost place
never loses a match, because the star that follows can absorb whatever a later place would skip.
No backtracking across stars is ever needed (Redis's recursive matcher needed a 2022 fix for
exactly this, CVE-2022-36021; a regex translation backtracks the same way).

Redis's reading of the pattern, kept here because clients see it: `\\x` is a literal x and a
trailing `\\` a literal backslash; in `[...]` a range may end with `]` (`[a-]` is `]`..`a`), range
bounds compare as signed chars (bytes >= 0x80 are negative), `[]` matches nothing and an
unterminated class runs to the end of the pattern; an empty key matches only the empty pattern.
"""

from __future__ import annotations

import re
import time

# One token of a pattern: a run of stars, `?`, an escaped byte, a class, a literal run, or a
# trailing backslash. A class's items: an escaped byte, a range `x-y` (y may be `]`), or a byte.
_CLASS = rb"\[\^?(?:\\[\s\S]|[^\]\\]-[\s\S]|[^\]])*(?:\]|\Z)"
_TOKEN = re.compile(rb"(\*+)|(\?)|\\([\s\S])|(" + _CLASS + rb")|([^*?\[\\]+)|(\\)")
_CLASS_PARTS = re.compile(rb"\[(\^?)((?:\\[\s\S]|[^\]\\]-[\s\S]|[^\]])*)")
_CLASS_ITEM = re.compile(rb"\\([\s\S])|([^\]\\])-([\s\S])|([\s\S])")
_ANY = b"\x01" * 256
_NEGATE = bytes([1, 0]) + bytes(254)
_CACHE_SIZE = 256
# Reading a 64 KB pattern of classes takes a few hundred ms: it is done in slices this long.
COMPILE_SLICE_S = 0.005


def _class_mask(token: bytes) -> bytes:
    """256 bytes, 1 where the byte matches the class `token` (with its brackets)."""
    negate, body = _CLASS_PARTS.match(token).groups()
    # Indexed by signed char + 128, the order in which Redis compares range bounds.
    signed = bytearray(256)
    for escaped, low, high, single in _CLASS_ITEM.findall(body):
        if low:
            start, end = (low[0] + 128) & 255, (high[0] + 128) & 255
            if start > end:
                start, end = end, start
            signed[start : end + 1] = b"\x01" * (end - start + 1)
        else:
            signed[((escaped or single)[0] + 128) & 255] = 1
    mask = bytes(signed[128:] + signed[:128])
    return mask.translate(_NEGATE) if negate else mask


class _Segment:
    """A run of single-byte elements between stars: literal runs at fixed offsets, and classes."""

    __slots__ = ("length", "literals", "masks", "anchor", "anchor_offset")

    def __init__(self, pieces: list[bytes | bytearray]):
        # pieces: bytes for a literal run, bytearray (a mask) for `?` or a class.
        self.literals: list[tuple[int, bytes]] = []
        self.masks: list[tuple[int, bytes]] = []
        offset = 0
        for piece in pieces:
            if piece.__class__ is bytes:
                self.literals.append((offset, piece))
                offset += len(piece)
            else:
                if piece != _ANY:
                    self.masks.append((offset, bytes(piece)))
                offset += 1
        self.length = offset
        # The longest literal finds candidate places with bytes.find; it needs no check after.
        self.anchor = max(self.literals, key=lambda item: len(item[1]), default=None)
        if self.anchor is not None:
            self.literals.remove(self.anchor)

    def fits(self, key: bytes, at: int) -> bool:
        if self.anchor is not None and not key.startswith(self.anchor[1], at + self.anchor[0]):
            return False
        return self._rest_fits(key, at)

    def _rest_fits(self, key: bytes, at: int) -> bool:
        for offset, literal in self.literals:
            if not key.startswith(literal, at + offset):
                return False
        for offset, mask in self.masks:
            if not mask[key[at + offset]]:
                return False
        return True

    def find(self, key: bytes, start: int, end: int) -> int:
        """The leftmost place in key[start:end] where the segment fits, or -1."""
        last = end - self.length
        if self.anchor is None:
            for at in range(start, last + 1):
                if self._rest_fits(key, at):
                    return at
            return -1
        offset, literal = self.anchor
        stop = last + offset + len(literal)
        found = key.find(literal, start + offset, stop)
        while found >= 0:
            if self._rest_fits(key, found - offset):
                return found - offset
            found = key.find(literal, found + 1, stop)
        return -1


def _segments(pattern: bytes):
    """A generator (it yields between slices of work) returning the pattern split at its stars:
    n star runs give n + 1 segments, each (literal, length, None) for a plain literal or
    (None, length, _Segment) when it holds `?` or a class."""
    segments: list[tuple] = []
    pieces: list[bytes | bytearray] = []
    # One piece object per distinct class: a long pattern allocates little (and wakes the
    # garbage collector less).
    classes: dict[bytes, bytes | bytearray] = {}
    any_piece = bytearray(_ANY)
    deadline = time.perf_counter() + COMPILE_SLICE_S
    for number, token in enumerate(_TOKEN.finditer(pattern)):
        if number % 32 == 31 and time.perf_counter() > deadline:
            yield
            deadline = time.perf_counter() + COMPILE_SLICE_S
        stars, any_byte, escaped, klass, literal, backslash = token.groups()
        if stars:
            segments.append(_finish(pieces))
            pieces = []
            continue
        if any_byte:
            piece = any_piece
        elif klass:
            piece = classes.get(klass)
            if piece is None:
                mask = _class_mask(klass)
                piece = classes[klass] = bytes([mask.index(1)]) if mask.count(1) == 1 else bytearray(mask)
        else:
            piece = literal or escaped or backslash
        if piece.__class__ is bytes and pieces and pieces[-1].__class__ is bytes:
            pieces[-1] += piece
        else:
            pieces.append(piece)
    segments.append(_finish(pieces))
    return segments


def _finish(pieces: list[bytes | bytearray]) -> tuple:
    if not pieces:
        return b"", 0, None
    if len(pieces) == 1 and pieces[0].__class__ is bytes:
        return pieces[0], len(pieces[0]), None
    segment = _Segment(pieces)
    return None, segment.length, segment


def compile_glob(pattern: bytes):
    """A function key -> bool matching like Redis's stringmatchlen(pattern, key, nocase=0)."""
    steps = _compile_steps(pattern)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _compile_steps(pattern: bytes):
    segments = yield from _segments(pattern)
    (first, first_length, first_segment), (last, last_length, last_segment) = segments[0], segments[-1]
    if len(segments) == 1:
        if first_segment is None:
            return first.__eq__
        return lambda key: len(key) == first_length and first_segment.fits(key, 0)
    shortest = 0
    for number, (_, length, _) in enumerate(segments):
        shortest += length
        if number % 1024 == 1023:
            yield
    middle = segments[1:-1]
    first_fits = first_segment.fits if first_segment is not None else None
    last_fits = last_segment.fits if last_segment is not None else None

    def match(key: bytes) -> bool:
        n = len(key)
        if n < shortest or not n:
            return False
        if not (first_fits(key, 0) if first_fits else key.startswith(first)):
            return False
        end = n - last_length
        if not (last_fits(key, end) if last_fits else key.endswith(last)):
            return False
        at = first_length
        find = key.find
        # A plain literal is found without a method call.
        for literal, length, segment in middle:
            at = find(literal, at, end) if segment is None else segment.find(key, at, end)
            if at < 0:
                return False
            at += length
        return True

    return match


_cache: dict[bytes, object] = {}


def matcher(pattern: bytes):
    """A generator for commands that work in slices (Server.advance): returns the matcher for
    `pattern`, or None for `*` (Redis's callers take that as "everything"). A long pattern is
    read a slice at a time, other clients served in between."""
    if pattern == b"*":
        return None
    match = _cache.get(pattern)
    if match is None:
        match = yield from _compile_steps(pattern)
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[pattern] = match
    return match
