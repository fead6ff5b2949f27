"""The CPU profile `homelab profile` makes, from a real py-spy recording of a real toy-redis with a
planted hot spot: the hot function is on top, the flame graph shows it, names are escaped."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from homelab import profiling
from tests.planted import COSTS
from tests.profiling.conftest import Load

PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed in this venv (./dev setup installs "
                                                        "it with toy-redis)")


def py_spy_speedscope(pid: int, seconds: int, output: Path) -> dict:
    """What the node's script runs, against a local process."""
    options = profiling.py_spy_options(profiling.Request("node", "toy_redis", seconds, 100))
    subprocess.run([PY_SPY, "record", "--pid", str(pid), "--output", str(output), *options], check=True,
                   capture_output=True, timeout=60)
    return json.loads(output.read_text())


@pytest.fixture
def recorded(planted_toy, tmp_path) -> dict:
    with Load(planted_toy.client, "PLANTED.HOT", "50"):
        return py_spy_speedscope(planted_toy.process.pid, 3, tmp_path / "profile.json")


def test_the_hot_function_is_on_top(recorded):
    stacks = profiling.from_speedscope(recorded)
    top_frame, top_seconds = profiling.self_times(stacks).most_common(1)[0]
    assert top_frame.name == "deliberate_hot_spot"
    # The client only ever asks for the hot spot: most of the samples are in it.
    assert top_seconds / sum(stacks.values()) > 0.5
    assert profiling.summary(stacks).startswith(f"top: deliberate_hot_spot ({COSTS.name}:")


def test_the_samples_cover_the_recording(recorded):
    # py-spy weighs each sample by its interval: a busy main thread adds up to the 3 s recorded.
    assert 2.0 < sum(profiling.from_speedscope(recorded).values()) <= 3.5


def test_the_flame_graph_shows_the_hot_function_widest(recorded, tmp_path):
    request = profiling.Request("node", "toy_redis", 3, 100)
    [svg, speedscope] = profiling.write(recorded, request, ["svg", "speedscope"], tmp_path / "out")
    assert json.loads(speedscope.read_text()) == recorded
    boxes = {}
    for group in ElementTree.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}g"):
        title = group.find("{http://www.w3.org/2000/svg}title").text
        width = float(group.find("{http://www.w3.org/2000/svg}rect").get("width"))
        name = title.split(" (")[0]
        boxes[name] = max(width, boxes.get(name, 0))
    assert boxes["deliberate_hot_spot"] > 0.5 * profiling.WIDTH_PX


def test_names_from_the_process_are_not_markup():
    hostile = profiling.Frame('<script>alert("x")</script>', "/srv/a&b.py", 1)
    svg = profiling.flame_svg({(hostile,): 1.0}, "title <b>")
    root = ElementTree.fromstring(svg)
    assert root.find("{http://www.w3.org/2000/svg}script") is None
    assert '<script>alert("x")</script> (a&b.py:1) 100.0%' in [element.text for element in root.iter()]


def test_an_idle_recording_says_so():
    assert profiling.summary({}).startswith("no samples")


@pytest.mark.parametrize("argv, expected", [
    (["worker-node-11", "toy_redis"], "NODE: worker-node-11 does not run toy_redis (it runs on worker-node-12)"),
    (["worker-node-12", "redis"], "SERVICE: expected one of toy_redis, alert_relay, got 'redis'"),
    (["nowhere", "toy_redis"], "NODE: expected a host of the inventory"),
    (["worker-node-12", "toy_redis", "--seconds", "0"], f"--seconds: expected 1..{profiling.MAX_SECONDS}, got 0"),
    (["worker-node-12", "toy_redis", "--rate", "5000"], f"--rate: expected 1..{profiling.MAX_RATE} samples"),
    # The inventory's pki.tls is off: the relay has no login, so it serves no allocation view.
    (["worker-node-14", "alert_relay", "--memory"], "NODE: --memory: worker-node-14's alert relay serves its "
                                                     "allocation view only behind its login (pki.tls on for "
                                                     "worker-node-14)"),
])
def test_bad_arguments_get_one_line_before_anything_runs(argv, expected, capsys, monkeypatch):
    from homelab.cli import main

    monkeypatch.setattr(profiling, "record", lambda *_: pytest.fail("nothing may run on a node"))
    assert main(["profile", *argv]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"homelab: {expected}") and error.count("\n") == 1


def test_the_pprof_file_parses_and_adds_up_to_the_recording(recorded, tmp_path):
    from pprof_sampler.profile_pb2 import Profile

    request = profiling.Request("node", "toy_redis", 3, 100)
    [path] = profiling.write(recorded, request, ["pprof"], tmp_path, started_ns=1_000_000_000)
    profile = Profile.FromString(gzip.decompress(path.read_bytes()))
    strings = profile.string_table
    assert strings[0] == ""
    assert [(strings[kind.type], strings[kind.unit]) for kind in profile.sample_type] == [
        ("samples", "count"), ("cpu", "nanoseconds")]
    assert profile.period == 10_000_000 and profile.duration_nanos == 3_000_000_000
    # A busy main thread: its samples stand for about the 3 s recorded, 100 of them a second.
    total_count = sum(sample.value[0] for sample in profile.sample)
    total_ns = sum(sample.value[1] for sample in profile.sample)
    assert 200 <= total_count <= 350 and abs(total_ns - total_count * profile.period) <= len(profile.sample) * profile.period
    functions = {function.id: strings[function.name] for function in profile.function}
    locations = {location.id: functions[location.line[0].function_id] for location in profile.location}
    leaf_ns: dict[str, int] = {}
    for sample in profile.sample:
        leaf = locations[sample.location_id[0]]  # pprof lists the leaf first
        leaf_ns[leaf] = leaf_ns.get(leaf, 0) + sample.value[1]
    assert max(leaf_ns, key=leaf_ns.get) == "deliberate_hot_spot"


@pytest.mark.parametrize("main_process, expected", [
    (None, "toy-redis is not running on this node"),
    (["sleep", "30"], "toy-redis: its main process is /usr/bin/sleep, not Python (a service run as a container"),
    ([sys.executable, "-c", "import time; time.sleep(30)"],
     "toy-redis: /opt/toy-redis/current/bin/py-spy is missing (deploy the node again"),
])
def test_the_node_script_says_in_one_line_what_is_missing(main_process, expected, tmp_path):
    from roles.toy_redis import APP

    process = subprocess.Popen(main_process) if main_process else None
    try:
        # systemctl as the script asks it: the unit's main process id (0: not running).
        fake = tmp_path / "systemctl"
        fake.write_text(f"#!/bin/sh\necho {process.pid if process else 0}\n")
        fake.chmod(0o755)
        script = profiling.py_spy_script(APP, profiling.Request("node", "toy_redis", 1, 100))
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                                env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    finally:
        if process:
            process.kill()
            process.wait()
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1
