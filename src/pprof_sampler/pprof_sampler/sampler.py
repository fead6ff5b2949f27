"""A low-rate CPU sampler running inside the service, keeping the last WINDOW_S seconds.

A timer thread reads every other thread's stack (sys._current_frames) and CPU clock
(pthread_getcpuclockid) `hz` times a second, and charges the CPU time a thread used since the last
tick to the stack it is in now. Threads that used no CPU (an event loop waiting in epoll, idle
workers) leave nothing, so what it keeps is a CPU profile, not a wall-clock one, and an idle
service costs one clock read per thread per tick. Its own thread is profiled too, so its cost shows
(under Sampler.sample) and the profile adds up to the CPU time the kernel counts for the process.

Memory is bounded by the window: at most WINDOW_S * hz ticks, each holding the busy threads'
stacks, whose frames and stacks are shared between ticks (the sharing caches are dropped when
they grow past CACHE_LIMIT, so a service with ever-new code paths cannot grow them without end).
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections import Counter, deque
from typing import NamedTuple


# The longest profile a caller can ask for (Alloy asks for its scrape interval less one second).
WINDOW_S = 60
MAX_HZ = 100
CACHE_LIMIT = 50_000


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
        self.frames: dict[tuple, Frame] = {}
        self.stacks: dict[tuple, tuple] = {}
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
        for ident, frame in sys._current_frames().items():
            try:
                cpu_ns = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
            except OSError:
                continue  # the thread ended meanwhile
            seen[ident] = cpu_ns
            used = cpu_ns - self.cpu_seen.get(ident, cpu_ns)
            if used > 0:
                busy.append((self._stack(frame), used))
        self.cpu_seen = seen
        with self.lock:
            self.ticks.append((time.monotonic_ns(), tuple(busy)))

    def _stack(self, frame) -> tuple[Frame, ...]:
        """The stack of ``frame``, root first, as shared Frame tuples."""
        if len(self.frames) > CACHE_LIMIT or len(self.stacks) > CACHE_LIMIT:
            self.frames, self.stacks = {}, {}
        frames = []
        while frame is not None:
            code = frame.f_code
            key = (code, frame.f_lineno)
            shared = self.frames.get(key)
            if shared is None:
                shared = self.frames[key] = Frame(code.co_qualname, code.co_filename, frame.f_lineno or 0)
            frames.append(shared)
            frame = frame.f_back
        stack = tuple(reversed(frames))
        return self.stacks.setdefault(stack, stack)

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
