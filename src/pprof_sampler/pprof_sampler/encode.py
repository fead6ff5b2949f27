"""CPU profiles in pprof's format (profile.proto beside this file; profile_pb2 is generated from it),
which `go tool pprof`, Pyroscope and Grafana read.

A profile holds each distinct stack once, leaf first, with two values: how many samples saw it and
the CPU time they stand for (samples x the sampling period); the two totals are what a reader sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from pprof_sampler.profile_pb2 import Profile


class Frame(Protocol):
    name: str
    file: str
    line: int


class _Strings:
    def __init__(self, profile: Profile):
        self.profile = profile
        self.index: dict[str, int] = {}
        self("")  # pprof requires string_table[0] == ""

    def __call__(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.profile.string_table)
            self.profile.string_table.append(text)
        return self.index[text]


def cpu_profile(stacks: Mapping[Sequence[Frame], float], period_ns: int, start_ns: int, duration_ns: int) -> bytes:
    """Serialized pprof Profile of ``stacks`` (root-first frames -> seconds seen), sampled every ``period_ns``."""
    profile = Profile(time_nanos=start_ns, duration_nanos=duration_ns, period=period_ns)
    string = _Strings(profile)
    profile.sample_type.add(type=string("samples"), unit=string("count"))
    profile.sample_type.add(type=string("cpu"), unit=string("nanoseconds"))
    profile.period_type.type, profile.period_type.unit = string("cpu"), string("nanoseconds")
    functions: dict[tuple[str, str], int] = {}
    locations: dict[tuple[str, str, int], int] = {}
    for stack, seconds in stacks.items():
        location_ids = []
        for frame in reversed(stack):
            function_key = (frame.name, frame.file)
            if function_key not in functions:
                functions[function_key] = len(functions) + 1
                profile.function.add(id=functions[function_key], name=string(frame.name),
                                     system_name=string(frame.name), filename=string(frame.file))
            location_key = (frame.name, frame.file, frame.line)
            if location_key not in locations:
                locations[location_key] = len(locations) + 1
                location = profile.location.add(id=locations[location_key])
                location.line.add(function_id=functions[function_key], line=frame.line)
            location_ids.append(locations[location_key])
        nanoseconds = round(seconds * 1e9)
        profile.sample.add(location_id=location_ids, value=[round(nanoseconds / period_ns), nanoseconds])
    return profile.SerializeToString()
