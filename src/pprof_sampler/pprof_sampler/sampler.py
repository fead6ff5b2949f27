"""A low-rate CPU sampler running inside the service, keeping the last WINDOW_S seconds.

The main thread, where the services run their event loop, is sampled from a SIGPROF handler: an
ITIMER_PROF timer sends SIGPROF each time the process has used a period of CPU (idle time sends
nothing), and Python runs the handler in the main thread at its next bytecode boundary with the
frame it interrupted; the handler charges the main thread's CPU time since the last sample (its
thread CPU clock) to that frame's stack. So the event loop is seen where its CPU goes: in the
request handlers, and under Runner.run for the time its C code (uvloop's or asyncio's) runs between
callbacks (py-spy names C time after the Python frame below it too). That C time reaches Python
first at the next callback's entry: a stack whose leaf was interrupted at its first instruction is
charged to its caller (a callback called from the loop's C code then counts for the frame that runs
the loop, Runner.run).

Every other thread is read by a timer thread `hz` times a second (sys._current_frames and the
thread's own CPU clock, pthread_getcpuclockid), which charges the CPU time a thread used since the
last tick to the stack it is in now (a thread seen for the first time: all the CPU it has used, it
began while the sampler ran). While no other thread uses CPU (toy-redis under load: its event loop
alone), the timer thread looks only every IDLE_TICK_S: each look takes the GIL from the main thread,
and at `hz` those looks cost toy-redis more than everything else the sampler does (see IDLE_TICK_S).
That thread holds the GIL when it reads, so it finds a busy thread where the thread let the GIL go
(at least every switch interval, 5 ms, for long Python stretches): this was the sampler's only
method once, and it charged toy-redis's event loop under redis-benchmark 94-99% to Runner.run and
nothing to Connection._send, which the main thread's own clock puts at about half its CPU, because
the loop lets the GIL go in its C code between callbacks. The services' other threads (profile
builds, the relay's Slack worker and intake pool) run long or rare stretches, which it sees well.
Threads that used no CPU leave nothing, so what the sampler keeps is a CPU profile, and the profile
adds up to the CPU time the kernel counts for the process: the timer thread profiles itself (under
Sampler.sample), and the handler charges its own CPU to itself (Sampler._on_sigprof).

SIGPROF is the sampler's while it runs: start() refuses (SigprofTaken, one line) when the process
already has a SIGPROF handler or an ITIMER_PROF timer rather than override a profiler the service
set up, and stop() restores the handler it found. The handler is installed with SA_RESTART
(siginterrupt False), so that system calls the signal interrupts in any thread are restarted by
the kernel where they can be, besides Python retrying its own (PEP 475); the signal is sent to
whichever thread was using the CPU. Both start() and stop() run in the main thread (Python sets
signal handlers only there).

What a sample costs is walking the frames: per frame it reads the code object's id and the frame's
instruction offset, and the tuple of those numbers finds the stack, built once (names, files,
lines) the first time it is seen. No code object is hashed on the way (CPython hashes one from its
constants, nested functions included, on every call) and no line number is computed (f_lineno
scans the code's line table): those made most of a tick's cost in toy-redis. The ids stay valid
because the cache holds every code object whose id it keys on.

Memory is bounded by the window: at most WINDOW_S * hz ticks for the other threads and as many
samples of the main thread per core (ITIMER_PROF fires hz times per CPU second), each holding
stacks shared between them; the handler and the timer thread have a cache each (the handler can
run between any two instructions of the timer thread), dropped when it grows past CACHE_LIMIT
stacks, so a service with ever-new code paths cannot grow one without end.
"""

from __future__ import annotations

import dis
import gzip
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from types import CodeType
from typing import NamedTuple


# The longest profile a caller can ask for (Alloy asks for its scrape interval less one second).
WINDOW_S = 60
MAX_HZ = 100
# Distinct stacks (an instruction apart counts) remembered per cache; a busy service shows hundreds.
# A full cache of 22-frame stacks holds ~8 MiB when they share most frames, ~27 MiB when they share none.
CACHE_LIMIT = 5_000
# How often the timer thread looks for other threads' CPU while none used any since its last look. Each
# look wakes a thread that must take the GIL from a busy main thread; at MAX_HZ under redis-benchmark
# toy-redis's timer thread used 1.8% of the main thread's CPU itself and tripled the main thread's
# involuntary context switches (7122 vs ~2200 in 10 s of CPU), where the SIGPROF handler took 0.2%.
# A thread that starts working is found within this time (and charged all its CPU since it began).
IDLE_TICK_S = 0.1
# How long stop() waits for a SIGPROF already sent to be delivered before it restores the handler
# it found (the default one ends the process).
PENDING_WAIT_S = 1.0
_RESUME = dis.opmap["RESUME"]


class SigprofTaken(Exception):
    """The process already uses SIGPROF (a handler or an ITIMER_PROF timer): the sampler needs it."""


class Frame(NamedTuple):
    name: str
    file: str
    line: int


class Stacks:
    """Stacks by (id(code), instruction offset) of each frame, built once; one per sampling thread."""

    def __init__(self, charge_entry_to_caller: bool):
        self.charge_entry_to_caller = charge_entry_to_caller
        # (id(code), instruction offset, ...) of a stack, leaf first -> its Frames, root first.
        self.stacks: dict[tuple[int, ...], tuple[Frame, ...]] = {}
        # (id(code), instruction offset) -> its Frame, shared by the stacks passing there.
        self.frames: dict[tuple[int, int], Frame] = {}
        # Every code object an id in self.stacks stands for, so that no id is reused meanwhile.
        self.codes: dict[int, CodeType] = {}

    def of(self, frame) -> tuple[Frame, ...]:
        """The stack of ``frame``, root first, as a tuple shared by every sample that saw it."""
        where = []
        below = frame
        while below is not None:
            where.append(id(below.f_code))
            where.append(below.f_lasti)
            below = below.f_back
        key = tuple(where)
        stack = self.stacks.get(key)
        if stack is None:
            stack = self._new(key, frame)
        return stack

    def _new(self, key: tuple[int, ...], frame) -> tuple[Frame, ...]:
        if len(self.stacks) >= CACHE_LIMIT:
            self.stacks, self.frames, self.codes = {}, {}, {}
        frames = []
        leaf = frame
        for at in range(0, len(key), 2):
            code = frame.f_code
            self.codes[id(code)] = code
            shared = self.frames.get(key[at:at + 2])
            if shared is None:
                shared = self.frames[key[at:at + 2]] = Frame(code.co_qualname, code.co_filename, frame.f_lineno or 0)
            frames.append(shared)
            frame = frame.f_back
        if self.charge_entry_to_caller and len(frames) > 1 and leaf.f_lasti <= entry_offset(leaf.f_code):
            frames.pop(0)  # the CPU went to the caller (or C code it called) before this frame began
        stack = self.stacks[key] = tuple(reversed(frames))
        return stack


def entry_offset(code: CodeType) -> int:
    """The offset of a function's RESUME, where a call enters it (after any cell and generator set-up)."""
    raw = code.co_code
    for at in range(0, len(raw), 2):
        if raw[at] == _RESUME:
            return at
    return -1


def thread_cpu_ns(ident: int) -> int | None:
    """The CPU time thread ``ident`` has used, or None when it ended meanwhile."""
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
    except OSError:
        return None


def sigprof_user() -> str | None:
    """What holds SIGPROF in this process (its handler or an ITIMER_PROF timer), or None."""
    handler = signal.getsignal(signal.SIGPROF)
    if handler not in (signal.SIG_DFL, signal.SIG_IGN):
        named = "set outside Python" if handler is None else getattr(handler, "__qualname__", handler)
        return f"a SIGPROF handler ({named})"
    if signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
        return "an ITIMER_PROF timer"
    return None


class Sampler:
    def __init__(self, hz: int):
        if not 1 <= hz <= MAX_HZ:
            raise ValueError(f"expected 1..{MAX_HZ} samples per second, got {hz}")
        self.hz = hz
        self.period_ns = 1_000_000_000 // hz
        # (when, ((stack, CPU ns), ...)) of the other threads, by the timer thread.
        self.ticks: deque[tuple[int, tuple]] = deque(maxlen=WINDOW_S * hz)
        # The same for the main thread, by the SIGPROF handler (a deque's append needs no lock), which
        # runs hz times per CPU second of the process: up to one per core more often than the ticks.
        self.main_ticks: deque[tuple[int, tuple]] = deque(maxlen=WINDOW_S * hz * len(os.sched_getaffinity(0)))
        self.lock = threading.Lock()
        self.cpu_seen: dict[int, int] = {}
        self.thread_stacks = Stacks(charge_entry_to_caller=False)
        self.main_stacks = Stacks(charge_entry_to_caller=True)
        self.main_ident = threading.main_thread().ident
        self.main_cpu_ns = 0
        self.in_handler = False
        self.found_handler = None
        self.armed = False
        self.started_ns = time.monotonic_ns()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="pprof-sampler", daemon=True)

    def start(self) -> "Sampler":
        """Samples from now on; SigprofTaken if the process already uses SIGPROF (nothing changes then)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("the Sampler starts in the main thread: it samples that thread from a SIGPROF handler")
        user = sigprof_user()
        if user is not None:
            raise SigprofTaken(f"SIGPROF is in use ({user}), and the CPU sampler needs it: "
                               f"switch off the other profiler or this sampler")
        self.started_ns = time.monotonic_ns()
        self.main_cpu_ns = time.thread_time_ns()
        # The CPU the threads alive now used before sampling began is not the profile's; any thread
        # that appears later began while it ran (sample() charges it from 0).
        self.cpu_seen = {ident: cpu_ns for ident in sys._current_frames()
                         if ident != self.main_ident and (cpu_ns := thread_cpu_ns(ident)) is not None}
        self.found_handler = signal.signal(signal.SIGPROF, self._on_sigprof)
        signal.siginterrupt(signal.SIGPROF, False)
        period_s = self.period_ns / 1e9
        signal.setitimer(signal.ITIMER_PROF, period_s, period_s)
        self.armed = True
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ends sampling, within a period, and gives SIGPROF back as start() found it."""
        self.stopping = True
        if self.armed:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            # A SIGPROF sent before the timer stopped reaches our handler, not the one found.
            waited = time.monotonic() + PENDING_WAIT_S
            while signal.SIGPROF in signal.sigpending() and time.monotonic() < waited:
                time.sleep(0.001)
            signal.signal(signal.SIGPROF, self.found_handler)
            self.armed = False
        if self.thread.is_alive():
            self.thread.join()

    def _on_sigprof(self, signum, frame) -> None:
        if self.in_handler or frame is None:
            return  # a signal during the handler: its CPU is counted at the next one
        self.in_handler = True
        try:
            began = time.thread_time_ns()
            stack = self.main_stacks.of(frame)
            ended = time.thread_time_ns()
            # The CPU since the last sample where the main thread is, and the handler's own cost.
            self.main_ticks.append((time.monotonic_ns(), ((stack, began - self.main_cpu_ns),
                                                          (HANDLER_STACK, ended - began))))
            self.main_cpu_ns = ended
        finally:
            self.in_handler = False

    def _run(self) -> None:
        period_s = self.period_ns / 1e9
        due = time.monotonic()
        while not self.stopping:
            # While others work, ticks keep to the schedule (a late one does not shift the next), so
            # the rate holds. time.sleep, not an Event's wait: a wake-up from it costs half the CPU.
            due = due + period_s if self.sample() else max(due + period_s, time.monotonic() + IDLE_TICK_S)
            time.sleep(max(0.0, due - time.monotonic()))

    def sample(self) -> bool:
        """One tick of the timer thread: every thread but the main one (the handler's). Whether a
        thread besides this one used CPU since the last tick."""
        seen, busy = {}, []
        cpu_seen, stack_of, main = self.cpu_seen, self.thread_stacks.of, self.main_ident
        others_worked = False
        for ident, frame in sys._current_frames().items():
            if ident == main or (cpu_ns := thread_cpu_ns(ident)) is None:
                continue
            seen[ident] = cpu_ns
            used = cpu_ns - cpu_seen.get(ident, 0)
            if used > 0:
                busy.append((stack_of(frame), used))
                others_worked = others_worked or ident != self.thread.ident
        self.cpu_seen = seen
        with self.lock:
            self.ticks.append((time.monotonic_ns(), tuple(busy)))
        return others_worked

    def recent(self, seconds: int) -> tuple[Counter, int]:
        """CPU seconds by stack over the last ``seconds`` (at most WINDOW_S), and the nanoseconds covered."""
        now = time.monotonic_ns()
        covered = min(seconds * 1_000_000_000, now - self.started_ns)
        since = now - covered
        with self.lock:
            ticks = list(self.ticks)
        ticks += list(self.main_ticks)  # one C call: the handler cannot run in the middle of it
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


# Where the SIGPROF handler's own CPU time is charged: a stack of its own, at the profile's root.
HANDLER_STACK = (Frame(Sampler._on_sigprof.__qualname__, __file__, Sampler._on_sigprof.__code__.co_firstlineno),)
