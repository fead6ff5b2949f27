"""A low-rate CPU sampler running inside the service, keeping the last WINDOW_S seconds.

A timer thread reads every other thread's stack (sys._current_frames) and CPU clock
(pthread_getcpuclockid) `hz` times a second, and charges the CPU time a thread used since the last
tick to the stack it is in now. Threads that used no CPU (an event loop waiting in epoll, idle
workers) leave nothing, so what it keeps is a CPU profile, not a wall-clock one, and an idle
service costs one clock read per thread per tick. Its own thread is profiled too, so its cost shows
(under Sampler.sample) and the profile adds up to the CPU time the kernel counts for the process.

What it cannot see: the sampler reads a stack only while it holds the GIL, so it finds a busy
thread where that thread let the GIL go, and charges it everything since the last tick. A thread
running Python for long stretches is caught inside them (it is made to let go every switch
interval, 5 ms), but an event loop serving many short requests lets go in its C code (uvloop's
epoll and socket calls) between callbacks: toy-redis under redis-benchmark showed Runner.run 94%
here where py-spy, reading from outside, showed it 51% and Connection._send 14%. For where short
requests spend their time, take `homelab profile` (py-spy).

What a tick costs is walking each busy thread's frames: per frame it reads the code object's id
and the frame's instruction offset, and the tuple of those numbers finds the stack, built once
(names, files, lines) the first time it is seen. No code object is hashed on the way (CPython
hashes one from its constants, nested functions included, on every call) and no line number is
computed (f_lineno scans the code's line table): those made most of a tick's cost in toy-redis.
The ids stay valid because the cache holds every code object whose id it keys on.

Memory is bounded by the window: at most WINDOW_S * hz ticks, each holding the busy threads'
stacks, which are shared between ticks (the cache is dropped when it grows past CACHE_LIMIT
stacks, so a service with ever-new code paths cannot grow it without end).
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections import Counter, deque
from types import CodeType
from typing import NamedTuple


# The longest profile a caller can ask for (Alloy asks for its scrape interval less one second).
WINDOW_S = 60
MAX_HZ = 100
# Distinct stacks (an instruction apart counts) remembered; a busy service shows hundreds. A full
# cache of 22-frame stacks holds ~8 MiB when they share most frames, ~27 MiB when they share none.
CACHE_LIMIT = 5_000


class Frame(NamedTuple):
    name: str
    file: str
    line: int


class Sampler:
    def __init__(self, hz: int):
        if not 1 <= hz <= MAX_HZ:
            raise ValueError(f"expected 1..{MAX_HZ} samples per second, got {hz}")
        self.hz = hz
        self.period_ns = 1_000_000_000 // hz
        self.ticks: deque[tuple[int, tuple]] = deque(maxlen=WINDOW_S * hz)
        self.lock = threading.Lock()
        self.cpu_seen: dict[int, int] = {}
        # (id(code), instruction offset, ...) of a stack, leaf first -> its Frames, root first.
        self.stacks: dict[tuple[int, ...], tuple[Frame, ...]] = {}
        # (id(code), instruction offset) -> its Frame, shared by the stacks passing there.
        self.frames: dict[tuple[int, int], Frame] = {}
        # Every code object an id in self.stacks stands for, so that no id is reused meanwhile.
        self.codes: dict[int, CodeType] = {}
        self.started_ns = time.monotonic_ns()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="pprof-sampler", daemon=True)

    def start(self) -> "Sampler":
        self.started_ns = time.monotonic_ns()
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread within a period."""
        self.stopping = True
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        period_s = self.period_ns / 1e9
        due = time.monotonic()
        while not self.stopping:
            # Ticks keep to the schedule (a late one does not shift the next), so the rate holds.
            # time.sleep, not an Event's wait: a wake-up from it costs half the CPU.
            due += period_s
            time.sleep(max(0.0, due - time.monotonic()))
            self.sample()

    def sample(self) -> None:
        seen, busy = {}, []
        cpu_seen, stack_of = self.cpu_seen, self._stack
        clock, clock_of = time.clock_gettime_ns, time.pthread_getcpuclockid
        for ident, frame in sys._current_frames().items():
            try:
                cpu_ns = clock(clock_of(ident))
            except OSError:
                continue  # the thread ended meanwhile
            seen[ident] = cpu_ns
            used = cpu_ns - cpu_seen.get(ident, cpu_ns)
            if used > 0:
                busy.append((stack_of(frame), used))
        self.cpu_seen = seen
        with self.lock:
            self.ticks.append((time.monotonic_ns(), tuple(busy)))

    def _stack(self, frame) -> tuple[Frame, ...]:
        """The stack of ``frame``, root first, as a tuple shared by every tick that saw it."""
        where = []
        below = frame
        while below is not None:
            where.append(id(below.f_code))
            where.append(below.f_lasti)
            below = below.f_back
        key = tuple(where)
        stack = self.stacks.get(key)
        if stack is None:
            stack = self._new_stack(key, frame)
        return stack

    def _new_stack(self, key: tuple[int, ...], frame) -> tuple[Frame, ...]:
        if len(self.stacks) >= CACHE_LIMIT:
            self.stacks, self.frames, self.codes = {}, {}, {}
        frames = []
        for at in range(0, len(key), 2):
            code = frame.f_code
            self.codes[id(code)] = code
            shared = self.frames.get(key[at:at + 2])
            if shared is None:
                shared = self.frames[key[at:at + 2]] = Frame(code.co_qualname, code.co_filename, frame.f_lineno or 0)
            frames.append(shared)
            frame = frame.f_back
        stack = self.stacks[key] = tuple(reversed(frames))
        return stack

    def recent(self, seconds: int) -> tuple[Counter, int]:
        """CPU seconds by stack over the last ``seconds`` (at most WINDOW_S), and the nanoseconds covered."""
        now = time.monotonic_ns()
        covered = min(seconds * 1_000_000_000, now - self.started_ns)
        since = now - covered
        with self.lock:
            ticks = list(self.ticks)
        stacks: Counter = Counter()
        for at, busy in ticks:
            if at > since:
                for stack, used in busy:
                    stacks[stack] += used / 1e9
        return stacks, covered

    def profile(self, seconds: int) -> bytes:
        """The last ``seconds`` as a gzipped pprof CPU profile, as Go's /debug/pprof/profile serves it."""
        # Imported here: protobuf takes a tenth of a second to load, and every deploy imports this
        # package for MAX_HZ (the services' settings) without ever encoding a profile.
        from pprof_sampler.encode import cpu_profile

        stacks, covered = self.recent(seconds)
        return gzip.compress(cpu_profile(stacks, self.period_ns, time.time_ns() - covered, covered))
