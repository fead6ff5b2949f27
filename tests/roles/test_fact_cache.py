"""roles.fact_cache: a converged host answers from batched reads, and drift is still found and repaired.

Deploys a few managed files and a folder to this machine through pyinfra's @local connector (under
a temporary folder), as deploys/all.py does on nodes: the managed-file checks of a rerun come from
batched reads, not one round trip per fact, and a rerun after drift (content, mode, a removed file)
repairs exactly the drifted ones.
"""

from __future__ import annotations

import os
import stat

import pytest
from pyinfra.api.arguments import pop_global_arguments
from pyinfra.context import ctx_host, ctx_state

from roles import fact_cache
from tests.conftest import run_pyinfra

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes root-owned files through pyinfra's @local connector")

DEPLOY = """
from pyinfra import host
from pyinfra.operations import files

from roles import fact_cache
from roles.common import checked_file

fact_cache.install()
base = host.data.get("base")
files.directory(name="folder", path=f"{base}/conf", mode="0755")
for number in range(3):
    checked_file(name=f"config {number}", dest=f"{base}/conf/{number}.conf", content=f"value {number}\\n", mode="0640")
files.link(name="link", path=f"{base}/current", target=f"{base}/conf")
"""
# Facts the operations above read per file; a converged rerun must not read any of them on its own.
FILE_FACTS = ("files.File", "files.Sha1File", "files.Directory", "files.Link")


def deploy(tmp_path):
    path = tmp_path / "deploy_files.py"
    path.write_text(DEPLOY)
    run = run_pyinfra(str(path), "-vvv", "--data", f"base={tmp_path}", inventory="@local", timeout=300)
    assert run.returncode == 0 and not run.failed(), run.stderr[-3000:]
    return run


def facts_read_alone(run) -> list[str]:
    """The file facts pyinfra read in a round trip of their own (at -vvv it prints 'Loaded fact ...')."""
    return [line for line in run.stderr.splitlines() if "Loaded fact" in line and any(f in line for f in FILE_FACTS)]


def test_a_converged_rerun_reads_file_facts_in_batches_and_drift_is_repaired(tmp_path):
    first = deploy(tmp_path)
    assert {name for name, _hosts in first.changed()} >= {"config 0", "config 1", "config 2", "folder", "link"}

    rerun = deploy(tmp_path)
    assert rerun.changed() == []
    assert facts_read_alone(rerun) == []

    conf = tmp_path / "conf"
    (conf / "0.conf").write_text("edited by hand\n")
    (conf / "1.conf").chmod(0o666)
    (conf / "2.conf").unlink()
    repair = deploy(tmp_path)
    assert sorted(name for name, _hosts in repair.changed()) == ["config 0", "config 1", "config 2"]
    for number in range(3):
        assert (conf / f"{number}.conf").read_text() == f"value {number}\n"
        assert stat.S_IMODE((conf / f"{number}.conf").stat().st_mode) == 0o640

    assert deploy(tmp_path).changed() == []


def test_the_users_fact_reads_the_same_accounts_with_fewer_processes():
    """roles.fact_cache's Users command prints what pyinfra's own prints, line for line, on this
    Debian machine (its accounts, groups, lastlog and shadow), so server.user sees the same users."""
    import subprocess

    from pyinfra.facts.server import Users

    from roles import fact_cache

    pyinfra_command = fact_cache._ORIGINAL.get("users_command", Users.command)(Users())
    assert pyinfra_command != fact_cache.USERS_COMMAND

    def lines(command: str) -> list[str]:
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    theirs = lines(pyinfra_command)
    assert len(theirs) >= 2 and any(line.startswith("root:") for line in theirs)
    assert lines(fact_cache.USERS_COMMAND) == theirs
    assert Users().process(lines(fact_cache.USERS_COMMAND)) == Users().process(theirs)


PLANNING_DEPLOY = """
from io import StringIO

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from roles import fact_cache

fact_cache.install()
base = host.data.get("base")
with fact_cache.planning_reads_batched():
    lines = host.get_fact(FileContents, path=f"{base}/source") or []
    files.put(name="copy", src=StringIO("\\n".join(lines) + "\\n"), dest=f"{base}/copy")
"""


def remembering_deploy(source: str, tmp_path, cache):
    """A function that runs deploy ``source`` on @local, its lists of facts kept under ``cache``."""
    deploy_file = tmp_path / "deploy_remembering.py"
    deploy_file.write_text(source)

    def run_deploy():
        run = run_pyinfra(str(deploy_file), "-vvv", "--data", f"base={tmp_path}", inventory="@local",
                          timeout=300, env={"XDG_CACHE_HOME": str(cache)})
        assert run.returncode == 0 and not run.failed(), run.stderr[-3000:]
        return run
    return run_deploy


def test_planning_reads_what_it_asked_last_time_in_one_batch_and_never_keeps_values(tmp_path):
    """The facts a deploy file reads while planning, and those its operations read while executing,
    are read first, together, in one batch from the second run on (the lists are kept per host, the
    values never): a changed node is seen at once."""
    cache = tmp_path / "cache"
    deploy_planning = remembering_deploy(PLANNING_DEPLOY, tmp_path, cache)

    def read_alone(run) -> list[str]:
        return [line for line in run.stderr.splitlines() if "Loaded fact files.FileContents" in line]

    (tmp_path / "source").write_text("first secret-looking text\n")
    first = deploy_planning()
    assert read_alone(first) != []
    assert (tmp_path / "copy").read_text() == "first secret-looking text\n"

    (tmp_path / "source").write_text("second text\n")
    second = deploy_planning()
    assert read_alone(second) == []
    assert (tmp_path / "copy").read_text() == "second text\n"
    listings = sorted((cache / "homelab-ops" / "planning-facts").iterdir())
    assert [path.name.split(".", 1)[1] for path in listings] == ["ahead.json", "json"]
    assert "FileContents" in listings[1].read_text() and f"{tmp_path}/copy" in listings[0].read_text()
    assert not any("text" in path.read_text() for path in listings)

    # files.put's facts now come with FileContents (the second run was the first to find the copy).
    third = deploy_planning()
    assert third.changed() == [] and third.stderr.count("facts in one batch") == 1
    (tmp_path / "copy").write_text("drifted\n")
    assert [name for name, _hosts in deploy_planning().changed()] == ["copy"]
    assert (tmp_path / "copy").read_text() == "second text\n"


def test_sysctls_read_together_answer_as_each_read_alone():
    """server.sysctl's one-key Sysctl facts, read in one sysctl command, get what each fact's own
    command gives (a missing key included), on this machine's kernel."""
    import subprocess

    from pyinfra.facts.server import Sysctl

    from roles import fact_cache

    keys = ["net.core.somaxconn", "net.ipv4.ip_local_port_range", "vm.overcommit_memory", "no.such.key"]
    requests = [(("sysctl", key), Sysctl(), {"keys": [key]}, {}) for key in keys]
    [read] = fact_cache._reads(None, requests)

    def output(command: str) -> tuple[list[str], int]:
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        return result.stdout.splitlines(), result.returncode

    answers = read.split(*output(read.command))
    for request_key, fact, fact_kwargs, _executor in requests:
        alone, _code = output(fact.command(**fact_kwargs).get_raw_value())
        expected = fact.process(alone) if alone else fact.default()
        assert (fact.process(answers[request_key]) if answers[request_key] else fact.default()) == expected
    assert answers[("sysctl", "net.ipv4.ip_local_port_range")] != []
    assert answers[("sysctl", "no.such.key")] == []


def test_a_remembered_read_runs_as_pyinfra_would_run_it():
    """Planning's remembered reads look the host's global arguments up once, not per fact: each
    request (fact arguments by name, connector arguments such as sudo from host data) must be what
    pyinfra's own argument handling gives."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.facts.files import File, FindInFile, Sha1File
    from pyinfra.facts.server import Command, Sysctl
    from pyinfra.facts.systemd import SystemdStatus

    inventory = Inventory((["node"], {"_sudo": True, "_sudo_user": "ops", "_env": {"LC_ALL": "C"}}))
    state = State(inventory, Config())
    host = inventory.get_host("node")
    reads = [(File, ("/etc/hosts",), {}), (File, (), {"path": "/etc/hosts"}), (Command, ("uname -r",), {}),
             (Sysctl, (), {"keys": ["net.core.somaxconn"]}), (fact_cache.Users, (), {}),
             (Sha1File, (), {"path": "/etc/hosts"}), (SystemdStatus, (), {"services": ["ssh.service"]}),
             (FindInFile, ("/etc/hosts", "localhost"), {}), (FindInFile, ("/etc/hosts",), {"pattern": "x",
                                                                                          "interpolate_variables": True})]
    with ctx_state.use(state), ctx_host.use(host):
        defaults, _keys = pop_global_arguments(state, host, {})
        for cls, args, kwargs in reads:
            key = fact_cache._key(host, cls, args, kwargs)
            _key_, fact, fact_kwargs, executor = fact_cache._request(host, key, cls, args, kwargs, defaults)
            _key_, plain_fact, plain_kwargs, plain_executor = fact_cache._request(host, key, cls, args, kwargs)
            assert (type(fact), fact_kwargs, executor) == (type(plain_fact), plain_kwargs, plain_executor)
            assert executor["_sudo"] is True and executor["_sudo_user"] == "ops"


AHEAD_DEPLOY = """
from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import FileContents
from pyinfra.facts.server import Date

from roles import fact_cache
from roles.pyinfra_prepare import hosts_run_independently

fact_cache.install()
hosts_run_independently()
base = host.data.get("base")


@operation()
def stamp(path: str, wanted: str):
    if host.get_fact(FileContents, path=path) != [wanted]:
        host.get_fact(Date)  # a fact only a change asks
        yield f"echo {wanted} > {path}"


with fact_cache.planning_reads_batched():
    stamp(name="stamp", path=f"{base}/stamp", wanted="converged")
"""


def test_a_no_op_run_forgets_the_reads_only_a_change_needed(tmp_path):
    """The list of facts read ahead is what the operations asked on the last run: a read only a
    changing run made (here the date) is not read again at every later no-op."""
    cache = tmp_path / "cache"
    deploy_ahead = remembering_deploy(AHEAD_DEPLOY, tmp_path, cache)

    def ahead_listing() -> str:
        [listing] = (cache / "homelab-ops" / "planning-facts").glob("*.ahead.json")
        return listing.read_text()

    assert [name for name, _hosts in deploy_ahead().changed()] == ["stamp"]
    assert "server:Date" in ahead_listing() and "FileContents" in ahead_listing()

    assert deploy_ahead().changed() == []  # read the date ahead once more, and no longer needs it
    assert "server:Date" not in ahead_listing() and "FileContents" in ahead_listing()
    third = deploy_ahead()
    assert third.changed() == [] and third.stderr.count("facts in one batch") == 1

    (tmp_path / "stamp").write_text("drifted\n")
    assert [name for name, _hosts in deploy_ahead().changed()] == ["stamp"]
    assert (tmp_path / "stamp").read_text() == "converged\n"
    assert "server:Date" in ahead_listing()
