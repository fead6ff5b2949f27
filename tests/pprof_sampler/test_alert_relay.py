"""Continuous profiling in a real alert relay (profiling_hz): GET /debug/pprof/profile behind the
login of web_config_file serves a pprof CPU profile that parses and shows the planted hot function
on top; without a login it is refused, and without web_config_file the setting is refused, as is a
process whose SIGPROF is taken."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from pprof_sampler import PATH, WINDOW_S

from tests.alert_relay.conftest import RELAY, faxplus, make_relay, slack  # noqa: F401 (fixtures)
from tests.alert_relay.test_tls import PASSWORD, tls_files  # noqa: F401 (fixture)
from tests.planted import pythonpath

from .profiles import cpu_ns_by_leaf, parse

HZ = 50
HOT_S = 2
PLANTED = Path(__file__).parent / "planted_relay"


@pytest.fixture
def profiled_relay(make_relay, tls_files, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", pythonpath(PLANTED))
    monkeypatch.setenv("PLANTED_HOT_FILE", str(tls_files / "burn"))
    return make_relay(web_config_file=str(tls_files / "web.yml"), profiling_hz=HZ)


def get_profile(relay, tls_files, seconds, auth=("prometheus", PASSWORD)):  # noqa: F811
    return requests.get(f"{relay.url}{PATH}?seconds={seconds}", auth=auth, verify=str(tls_files / "ca.crt"),
                        timeout=10)


def test_the_profile_parses_and_shows_the_hot_function_on_top(profiled_relay, tls_files):  # noqa: F811
    # The relay listens, so its sampler runs: the planted thread burns now, and is done after HOT_S.
    (tls_files / "burn").write_text(str(HOT_S))
    time.sleep(HOT_S + 0.5)
    response = get_profile(profiled_relay, tls_files, WINDOW_S)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    profile = parse(response.content)
    assert profile.period == 1_000_000_000 // HZ
    by_leaf = cpu_ns_by_leaf(profile)
    assert max(by_leaf, key=by_leaf.get) == "deliberate_hot_spot"
    # CPU time: at most the HOT_S seconds it burned (a period more at the window's edge).
    assert by_leaf["deliberate_hot_spot"] <= (HOT_S + 1 / HZ) * 1e9


def test_the_profile_asks_for_the_login_and_a_bounded_window(profiled_relay, tls_files):  # noqa: F811
    for auth in (None, ("prometheus", "wrong")):
        assert get_profile(profiled_relay, tls_files, 1, auth=auth).status_code == 401
    refused = get_profile(profiled_relay, tls_files, WINDOW_S + 1)
    assert refused.status_code == 400 and refused.text == f"seconds: expected a whole number from 1 to {WINDOW_S}\n"


def test_profiling_without_web_config_file_is_refused_in_one_line(make_relay, tmp_path):
    relay = make_relay()
    relay.stop()
    config = yaml.safe_load(relay.config_path.read_text())
    config["profiling_hz"] = HZ
    relay.config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(RELAY), "--check-config", str(relay.config_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"alert-relay: {relay.config_path}: profiling_hz: expected 0 without web_config_file (CPU profiles "
                             f"are served only behind its logins), got {HZ}\n")


def test_a_relay_whose_sigprof_is_taken_is_refused_in_one_line(make_relay, tls_files):  # noqa: F811
    relay = make_relay(web_config_file=str(tls_files / "web.yml"), profiling_hz=HZ)
    relay.stop()
    # The same relay, in a process that profiles itself with SIGPROF already.
    program = ("import signal, sys\n"
               "def own_profiler(signum, frame): pass\n"
               "signal.signal(signal.SIGPROF, own_profiler)\n"
               "from alert_relay.__main__ import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", program, "--config", str(relay.config_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1:] == [
        f"alert-relay: {relay.config_path}: profiling_hz: SIGPROF is in use (a SIGPROF handler (own_profiler)), and "
        f"the CPU sampler needs it: switch off the other profiler or this sampler"]
