"""roles.pyinfra_prepare: operations planned in the same order, with the same hashes, as pyinfra plans them.

pyinfra orders a run's operations by the line numbers of their call stacks (and tells them apart
by a hash of those); the patch only reads the stack more cheaply. Planned with and without it,
a deploy with operations in the deploy file, in functions, in a @deploy of another module and in a
host.loop must print the same order and hashes (pyinfra's --debug line for each operation).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_pyinfra

HELPER = """
from pyinfra.api import deploy
from pyinfra.operations import server


def nested(x):
    server.shell(name=f"nested {x}", commands=["true"])


@deploy("helper role")
def apply():
    server.shell(name="role first", commands=["true"])
    for x in (1, 2):  # same lines twice: pyinfra tells them apart by a counter
        nested(x)
"""

DEPLOY = """
from pyinfra import host
from pyinfra.operations import server

import speed_helper
from roles import pyinfra_prepare

if host.data.get("patched"):
    pyinfra_prepare.install()


def inner(x):
    server.shell(name=f"inner {x}", commands=["true"])


server.shell(name="first", commands=["true"])
for x in host.loop([1, 2]):
    inner(x)
speed_helper.apply()
server.shell(name="last", commands=["true"])
"""


def planned(tmp_path, patched: bool) -> list[str]:
    (tmp_path / "speed_helper.py").write_text(HELPER)
    (tmp_path / "deploy.py").write_text(DEPLOY)
    data = ["--data", "patched=1"] if patched else []
    run = run_pyinfra("--dry", "--debug", str(tmp_path / "deploy.py"), *data, inventory="@local",
                      env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    return re.findall(r"Adding operation, (.*)", run.stderr)


def test_operations_are_planned_in_pyinfras_order_with_its_hashes(tmp_path):
    plain = planned(tmp_path, patched=False)
    assert len(plain) == 7, plain
    assert planned(tmp_path, patched=True) == plain


def test_host_data_reads_what_pyinfra_reads_layer_by_layer(monkeypatch):
    """Every key of every layer (and absent ones) gives the same value or the same error with the
    inventory's layers merged once: host data over groups' (the later group winning) over all
    hosts', the --data override over them, the host's own assignments first, @deploy defaults last."""
    from pyinfra.api.host import HostData
    from pyinfra.api.inventory import Inventory

    from roles import pyinfra_prepare

    inventory = Inventory(
        (["a", ("b", {"own": "b", "shared": "host b"})], {"shared": "all", "everyone": 1}),
        override_data={"forced": "cli", "shared_override": "cli", "own": "cli"},
        first=(["a", "b"], {"shared": "first", "grouped": "first", "nested": {"k": [1]}}),
        second=(["b"], {"grouped": "second", "shared_override": "group"}),
    )
    keys = ["own", "shared", "everyone", "forced", "shared_override", "grouped", "nested", "absent",
            "_sudo", "deployed", "assigned"]

    def reads(host) -> list:
        answers = []
        for key in keys:
            try:
                answers.append(getattr(host.data, key))
            except AttributeError as missing:
                answers.append(("missing", str(missing)))
        return answers

    def every_read() -> list:
        answers = []
        for name in ("a", "b"):
            host = inventory.get_host(name)
            answers.append(reads(host))
            host.current_deploy_data = {"deployed": "default", "shared": "deploy default"}
            answers.append(reads(host))
            host.data.assigned = host.data.shared = name
            answers.append(reads(host))
            host.current_deploy_data = None
            host.data.override_datas.clear()
        return answers

    plain = every_read()
    monkeypatch.setattr(HostData, "__getattr__", pyinfra_prepare.host_data_getattr)
    assert every_read() == plain
    # Values are copies, as pyinfra's: changing one leaves the inventory's alone.
    inventory.get_host("a").data.nested["k"] = []
    assert inventory.get_host("a").data.nested == {"k": [1]}


def test_global_arguments_are_what_pyinfra_pops(monkeypatch):
    """An operation's global arguments, from its keywords, the current @deploy's, host data (the
    host's own, the --data override, its groups', all hosts', the @deploy's data defaults) and the
    config: the same values, the same keys popped and left, the same refusal of a bad type."""
    from pyinfra.api import Config, State
    from pyinfra.api.arguments import pop_global_arguments as pyinfras
    from pyinfra.api.exceptions import ArgumentTypeError
    from pyinfra.api.inventory import Inventory

    from roles import pyinfra_prepare

    inventory = Inventory(
        (["a", ("b", {"_sudo": True, "_env": {"HOST": "b"}})], {"_timeout": 30, "plain": 1}),
        override_data={"_su_user": "cli"},
        first=(["a", "b"], {"_sudo_user": "group", "_env": {"GROUP": "1"}}),
    )
    state = State(inventory, Config(SUDO_PASSWORD="secret", TIMEOUT=5))
    calls = [
        {},
        {"_sudo": False, "name": "kept", "_ignore_errors": True},
        {"_env": {"CALL": "1"}, "_shell_executable": "bash", "other": 2},
        {"_timeout": "not a number"},  # refused: an int is expected
    ]

    def pops(pop) -> list:
        answers = []
        for name in ("a", "b"):
            host = inventory.get_host(name)
            for deploy_kwargs, deploy_data, assigned in [
                (None, None, {}),
                ({"_sudo": True, "_retries": 2}, {"_chdir": "/srv", "_sudo_user": "deploy"}, {}),
                ({"_timeout": 7}, None, {"_sudo_user": "assigned", "_use_sudo_login": True}),
            ]:
                host.current_deploy_kwargs, host.current_deploy_data = deploy_kwargs, deploy_data
                host.data.override_datas.clear()
                host.data.override_datas.update(assigned)
                for call in calls:
                    kwargs = {key: (dict(value) if isinstance(value, dict) else value)
                              for key, value in call.items()}
                    try:
                        arguments, found = pop(state, host, kwargs)
                        answers.append((sorted(arguments.items(), key=repr), found, kwargs))
                    except ArgumentTypeError as refused:
                        answers.append(("refused", str(refused)))
        return answers

    plain = pops(pyinfras)
    assert plain.count(("refused", "Invalid argument `_timeout`:: str is not an instance of int")) == 6
    assert pops(pyinfra_prepare.pop_global_arguments) == plain
    monkeypatch.setattr("pyinfra.api.host.HostData.__getattr__", pyinfra_prepare.host_data_getattr)
    assert pops(pyinfra_prepare.pop_global_arguments) == plain


MODE_DEPLOY = """
import inspect
import os

from pyinfra import host
from pyinfra.operations import python

from roles import pyinfra_prepare

if host.data.get("independent"):
    pyinfra_prepare.hosts_run_independently()


def record_mode(state, host):  # taking both, pyinfra calls it in the greenlet running the operation
    # That greenlet is spawned per operation and host (pyinfra's lockstep), per host by
    # roles.pyinfra_prepare (independent), or none: the main one (serial, from _run_serial_ops).
    stack = inspect.stack()
    if any(frame.function == "_run_serial_ops" for frame in stack):
        mode = "serial"
    elif any(frame.filename.endswith("roles/pyinfra_prepare.py") for frame in stack):
        mode = "independent"
    else:
        mode = "lockstep"
    with open(os.environ["MODE_FILE"], "w") as mode_file:
        mode_file.write(mode)


python.call(name="record how operations run", function=record_mode, _run_once=bool(host.data.get("run_once")))
"""


@pytest.mark.parametrize(("args", "mode"), [
    ((), "lockstep"),  # pyinfra's default, without the call
    (("--data", "independent=1"), "independent"),
    (("--data", "independent=1", "--serial"), "serial"),  # asked for on the command line: kept
    (("--data", "independent=1", "--data", "run_once=1"), "lockstep"),  # an operation for one host only
])
def test_hosts_run_their_operations_independently_unless_serial_is_asked(tmp_path, args, mode):
    deploy = tmp_path / "deploy.py"
    deploy.write_text(MODE_DEPLOY)
    mode_file = tmp_path / "mode"
    run = run_pyinfra(str(deploy), *args, inventory="@local", env={"MODE_FILE": str(mode_file)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert mode_file.read_text() == mode
    starts = [line for line in run.stderr.splitlines() if re.search(r"Starting .*operation:", line)]
    # Independent hosts' lines are interleaved: each names its host.
    assert starts and all(("[@local]" in line) == (mode == "independent") for line in starts), starts


FAILING_DEPLOY = """
import os

from pyinfra.operations import server

from roles import pyinfra_prepare

pyinfra_prepare.hosts_run_independently()
server.shell(name="fails", commands=["false"])
server.shell(name="after the failure", commands=[f"touch {os.environ['AFTER']}"])
"""


def test_a_host_whose_operation_fails_fails_the_run_and_stops_there(tmp_path):
    """pyinfra's own --no-wait (3.10) lets the failure escape the host's greenlet: a traceback, and
    the run exits 0 as if the host had succeeded."""
    deploy = tmp_path / "deploy.py"
    deploy.write_text(FAILING_DEPLOY)
    after = tmp_path / "after"
    run = run_pyinfra(str(deploy), inventory="@local", env={"AFTER": str(after)})
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "No hosts remaining" in run.stderr  # its only host failed
    assert not after.exists()
