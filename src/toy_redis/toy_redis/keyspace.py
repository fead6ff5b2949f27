"""The keyspace: string values, TTLs, expiry and eviction.

Keys and values are bytes. TTLs are absolute Unix times in milliseconds (as Redis stores them).

Expiry is lazy on access plus an active cycle run from the event loop. The active cycle does not
keep a timer or task per key: keys with a TTL are also filed in coarse time buckets (a timing
wheel, one list per EXPIRY_BUCKET_MS of expiry time) and the cycle walks the buckets that are due,
deleting the keys whose TTL has passed, within a time budget per call. An entry whose key has since
been given another TTL, persisted or deleted is skipped as stale, and the wheel is rebuilt from the
TTL table when stale entries pile up, so its size stays proportional to the keys with a TTL.
(Redis samples random keys instead; a Python dict cannot be sampled cheaply, and walking due
buckets reclaims a mass expiry far faster.)

Memory is accounted per key (key + value + a fixed overhead per entry and per TTL) rather than
read from RSS: Python keeps freed memory for reuse, so RSS would make eviction overshoot.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import OrderedDict
from itertools import islice

EXPIRY_BUCKET_MS = 100
SCAN_SNAPSHOTS = 4
SCAN_SNAPSHOT_IDLE_S = 60  # a snapshot no scan has used for this long is dropped
SCAN_POSITION_BITS = 40
# Bytes per key beyond its key and value: two bytes objects' headers and the dict entry.
KEY_OVERHEAD = 136
# A TTL costs an int object, an entry in the TTL table and a slot in the wheel.
TTL_OVERHEAD = 96
# Entries freed per step after a flush: freeing a big dict at once would stall every client.
FREE_STEP = 512


def now_ms() -> int:
    return int(time.time() * 1000)


class Keyspace:
    """Database 0: the only one toy-redis has."""

    def __init__(self, policy: str = "noeviction"):
        self.policy = policy
        self.lru = policy == "allkeys-lru"
        self.data: dict[bytes, bytes] = OrderedDict() if policy == "allkeys-lru" else {}
        self.expires: dict[bytes, int] = {}
        self._wheel: dict[int, list[bytes]] = {}
        self._wheel_heap: list[int] = []
        self._wheel_entries = 0
        # A partly walked bucket: (bucket, keys, next index).
        self._walking: tuple[int, list[bytes], int] | None = None
        self.used_memory = 0
        self.peak_keys = 0
        self.added_keys = 0
        # (value, its integer) of the last INCR: a counter hit again is not parsed again.
        self.last_counter: tuple[bytes | None, int] = (None, 0)
        self._scans: dict[int, tuple[list[bytes], int]] = {}
        self._scan_used: dict[int, float] = {}
        self._scan_number = 0
        self.expired_keys = 0
        self.expired_stale_skipped = 0
        self.evicted_keys = 0
        self.hits = 0
        self.misses = 0
        # Called with (key, when_ms or None) so that persistence can log what expiry/eviction did.
        self.on_delete = None
        # Tables dropped by a flush, emptied a step at a time by free_garbage().
        self.garbage: list[dict] = []

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        value = self.data.get(key)
        if value is None:
            self.misses += 1
            return None
        if key in self.expires and self.expires[key] <= now_ms():
            self._expire(key)
            self.misses += 1
            return None
        if self.lru:
            self.data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: bytes) -> bytes | None:
        """Like get() but counts no hit or miss (used by writes)."""
        value = self.data.get(key)
        if value is not None and key in self.expires and self.expires[key] <= now_ms():
            self._expire(key)
            return None
        return value

    def exists(self, key: bytes) -> bool:
        return self.peek(key) is not None

    def ttl_ms(self, key: bytes) -> int | None:
        """Absolute expiry of an existing key, or None if it has none."""
        return self.expires.get(key)

    def __len__(self) -> int:
        return len(self.data)

    # -- writes --------------------------------------------------------------------------------

    def set(self, key: bytes, value: bytes, expire_at: int | None = None, keep_ttl: bool = False) -> None:
        """Store a value; its TTL is cleared unless keep_ttl, or set to expire_at."""
        data = self.data
        old = data.get(key)
        if old is None:
            self.used_memory += len(key) + len(value) + KEY_OVERHEAD
            self.added_keys += 1
        else:
            self.used_memory += len(value) - len(old)
        data[key] = value
        if self.lru and old is not None:
            data.move_to_end(key)
        if expire_at is not None:
            self.set_expire(key, expire_at)
        elif not keep_ttl and key in self.expires:
            del self.expires[key]
            self.used_memory -= TTL_OVERHEAD

    def set_expire(self, key: bytes, when: int) -> None:
        if key not in self.expires:
            self.used_memory += TTL_OVERHEAD
        self.expires[key] = when
        bucket = when // EXPIRY_BUCKET_MS
        keys = self._wheel.get(bucket)
        if keys is None:
            self._wheel[bucket] = [key]
            heapq.heappush(self._wheel_heap, bucket)
        else:
            keys.append(key)
        self._wheel_entries += 1

    def persist(self, key: bytes) -> bool:
        if key in self.expires:
            del self.expires[key]
            self.used_memory -= TTL_OVERHEAD
            return True
        return False

    def delete(self, key: bytes) -> bool:
        """Remove a key if it exists (an expired key counts as not existing)."""
        value = self.data.pop(key, None)
        if value is None:
            return False
        self.used_memory -= len(key) + len(value) + KEY_OVERHEAD
        when = self.expires.pop(key, None)
        if when is not None:
            self.used_memory -= TTL_OVERHEAD
            if when <= now_ms():
                # It had expired: a delete of an expired key reports nothing deleted, as in Redis.
                self.expired_keys += 1
                if self.on_delete:
                    self.on_delete(key)
                return False
        return True

    def _expire(self, key: bytes) -> None:
        value = self.data.pop(key)
        del self.expires[key]
        self.used_memory -= len(key) + len(value) + KEY_OVERHEAD + TTL_OVERHEAD
        self.expired_keys += 1
        if self.on_delete:
            self.on_delete(key)

    def flush(self) -> None:
        """Empty the database at once; the old tables are freed later, in steps (free_garbage)."""
        self.garbage += [self.data, self.expires, self._wheel, self._scans]
        self.data = OrderedDict() if self.policy == "allkeys-lru" else {}
        self.expires = {}
        self._wheel = {}
        self._wheel_heap = []
        self._wheel_entries = 0
        self._walking = None
        self.used_memory = 0
        self.peak_keys = 0
        self._scans = {}

    def free_garbage(self, budget_s: float) -> bool:
        """Free flushed entries for about budget_s; True if some are left."""
        deadline = time.perf_counter() + budget_s
        garbage = self.garbage
        while garbage:
            table = garbage[-1]
            popitem = table.popitem
            for _ in range(min(FREE_STEP, len(table))):
                popitem()
            if not table:
                garbage.pop()
            if time.perf_counter() > deadline:
                break
        return bool(garbage)

    def set_policy(self, policy: str) -> None:
        if policy == self.policy:
            return
        self.data = OrderedDict(self.data) if policy == "allkeys-lru" else dict(self.data)
        self.policy = policy
        self.lru = policy == "allkeys-lru"

    # -- iteration -----------------------------------------------------------------------------

    def is_live(self, key: bytes, now: int) -> bool:
        """The key exists and had not expired at `now` (no side effect)."""
        if key not in self.data:
            return False
        when = self.expires.get(key)
        return when is None or when > now

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step: (next cursor, key names, some maybe deleted since).

        A Python dict has no stable bucket order to resume from, so a scan walks a snapshot of the
        key names taken when it starts (cursor 0). The cursor holds the snapshot's number in its
        high bits and the position in its low bits. At most SCAN_SNAPSHOTS snapshots are kept, shared
        by all clients (a scan starting while no key was added since the last snapshot reuses it),
        so memory does not grow with the number of scanning clients; a cursor whose snapshot was
        dropped gets a new one, which may repeat or, if keys were deleted, skip some names.
        """
        if cursor == 0:
            number = self._scan_number
            snapshot = self._scans.get(number)
            if snapshot is None or snapshot[1] != self.added_keys:
                number = self._scan_number = self._scan_number % (2**23 - 1) + 1
                snapshot = self._scans[number] = (list(self.data), self.added_keys)
                self._drop_extra_scans()
            position = 0
        else:
            number, position = cursor >> SCAN_POSITION_BITS, cursor & (2**SCAN_POSITION_BITS - 1)
            snapshot = self._scans.get(number)
            if snapshot is None:
                snapshot = self._scans[number] = (list(self.data), self.added_keys)
                self._drop_extra_scans()
        # Most recently used last, so the oldest is dropped first.
        self._scans[number] = self._scans.pop(number)
        self._scan_used[number] = time.monotonic()
        names = snapshot[0]
        batch = names[position : position + count]
        position += count
        if position >= len(names):
            return 0, batch
        return (number << SCAN_POSITION_BITS) | position, batch

    def _drop_extra_scans(self) -> None:
        while len(self._scans) > SCAN_SNAPSHOTS:
            oldest = next(iter(self._scans))
            del self._scans[oldest]
            self._scan_used.pop(oldest, None)

    def random_key(self) -> bytes | None:
        # A dict cannot be sampled in O(1); a C-speed skip is fine for this rarely used command.
        for _ in range(100):
            if not self.data:
                return None
            key = next(islice(self.data, random.randrange(len(self.data)), None))
            if self.peek(key) is not None:
                return key
        return None

    # -- active expiry -------------------------------------------------------------------------

    def active_expire(self, budget_s: float) -> bool:
        """Delete keys whose TTL has passed, for at most about budget_s; True if work is left."""
        deadline = time.perf_counter() + budget_s
        now = now_ms()
        due_bucket = now // EXPIRY_BUCKET_MS  # buckets below this one are entirely due
        data, expires = self.data, self.expires
        while True:
            if self._walking is None:
                if not self._wheel_heap or self._wheel_heap[0] >= due_bucket:
                    return False
                bucket = heapq.heappop(self._wheel_heap)
                self._walking = (bucket, self._wheel.pop(bucket), 0)
            bucket, keys, index = self._walking
            if bucket >= due_bucket:
                # Left half-walked by eviction (volatile-ttl): not due yet.
                return False
            end = len(keys)
            while index < end:
                stop = min(end, index + 512)
                for key in keys[index:stop]:
                    when = expires.get(key)
                    if when is None or when // EXPIRY_BUCKET_MS != bucket:
                        self.expired_stale_skipped += 1
                        continue
                    value = data.pop(key)
                    del expires[key]
                    self.used_memory -= len(key) + len(value) + KEY_OVERHEAD + TTL_OVERHEAD
                    self.expired_keys += 1
                    if self.on_delete:
                        self.on_delete(key)
                self._wheel_entries -= stop - index
                index = stop
                if time.perf_counter() > deadline:
                    self._walking = (bucket, keys, index) if index < end else None
                    return True
            self._walking = None

    def expired_stale_ratio(self) -> float:
        """Share of keys with a TTL that have expired but are not yet reclaimed (Redis's expired_stale_perc)."""
        if not self.expires:
            return 0.0
        due_bucket = now_ms() // EXPIRY_BUCKET_MS
        due = sum(len(self._wheel[b]) for b in self._wheel_heap if b < due_bucket)
        if self._walking is not None:
            due += len(self._walking[1]) - self._walking[2]
        return min(1.0, due / len(self.expires))

    def compact(self) -> None:
        """Give memory back after mass deletions; rebuild the wheel when stale entries dominate."""
        if self._wheel_entries > 2 * len(self.expires) + 10000:
            self._wheel, self._wheel_heap, self._walking = {}, [], None
            self._wheel_entries = 0
            for key, when in self.expires.items():
                bucket = when // EXPIRY_BUCKET_MS
                keys = self._wheel.get(bucket)
                if keys is None:
                    self._wheel[bucket] = [key]
                    self._wheel_heap.append(bucket)
                else:
                    keys.append(key)
                self._wheel_entries += 1
            heapq.heapify(self._wheel_heap)
        # A Python dict never shrinks its table on deletion: copy it once it is mostly empty.
        size = len(self.data)
        if size > self.peak_keys:
            self.peak_keys = size
        elif self.peak_keys > 4096 and size < self.peak_keys // 4:
            self.data = OrderedDict(self.data) if self.policy == "allkeys-lru" else dict(self.data)
            self.expires = dict(self.expires)
            self.peak_keys = size
        idle_since = time.monotonic() - SCAN_SNAPSHOT_IDLE_S
        for number in [n for n in self._scans if self._scan_used.get(n, 0) < idle_since]:
            del self._scans[number]
            self._scan_used.pop(number, None)

    # -- eviction ------------------------------------------------------------------------------

    def evict(self, maxmemory: int) -> bool:
        """Evict keys per policy until used memory is under maxmemory; False if it cannot."""
        while self.used_memory > maxmemory:
            if self.policy == "allkeys-lru":
                if not self.data:
                    return False
                key = next(iter(self.data))
            elif self.policy == "volatile-ttl":
                key = self._nearest_expiring()
                if key is None:
                    return False
            else:
                return False
            value = self.data.pop(key)
            self.used_memory -= len(key) + len(value) + KEY_OVERHEAD
            if self.expires.pop(key, None) is not None:
                self.used_memory -= TTL_OVERHEAD
            self.evicted_keys += 1
            if self.on_delete:
                self.on_delete(key)
        return True

    def _nearest_expiring(self) -> bytes | None:
        expires = self.expires
        while True:
            if self._walking is None:
                if not self._wheel_heap:
                    return None
                bucket = heapq.heappop(self._wheel_heap)
                self._walking = (bucket, self._wheel.pop(bucket), 0)
            bucket, keys, index = self._walking
            while index < len(keys):
                key = keys[index]
                index += 1
                self._wheel_entries -= 1
                when = expires.get(key)
                if when is not None and when // EXPIRY_BUCKET_MS == bucket:
                    self._walking = (bucket, keys, index)
                    return key
            self._walking = None
