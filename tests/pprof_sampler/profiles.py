"""Reading what /debug/pprof/profile serves, with the profile.proto reader in pprof_sampler, and the
CPU time a process has used as the kernel counts it (what a profile's total must match)."""

from __future__ import annotations

import gzip
import os
from collections import Counter

from pprof_sampler.profile_pb2 import Profile


def parse(body: bytes) -> Profile:
    return Profile.FromString(gzip.decompress(body))


def cpu_ns_by_leaf(profile: Profile) -> Counter:
    """CPU nanoseconds by the function on top of each sampled stack (pprof lists the leaf first)."""
    by_leaf: Counter = Counter()
    for stack, cpu_ns in cpu_ns_by_stack(profile).items():
        by_leaf[stack[0]] += cpu_ns
    return by_leaf


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ns_by_stack(profile: Profile) -> Counter:
    """CPU nanoseconds by sampled stack, as a tuple of function names, leaf first."""
    strings = profile.string_table
    functions = {function.id: strings[function.name] for function in profile.function}
    locations = {location.id: functions[location.line[0].function_id] for location in profile.location}
    by_stack: Counter = Counter()
    for sample in profile.sample:
        by_stack[tuple(locations[location] for location in sample.location_id)] += sample.value[1]
    return by_stack
