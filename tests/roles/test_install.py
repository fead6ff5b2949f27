"""roles.install.apt_packages: a converged node is left alone however old apt's lists are; a node
missing a package gets fresh lists first, then the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.roles.test_grafana import plans_on_this_machine

# Plans apt_packages on @local with apt's lists a day old (pyinfra reads their age from the stamp
# file's mtime), and writes each operation's commands.
DEPLOY = """
import json
from datetime import datetime, timedelta
from pyinfra import host, state
from pyinfra.facts.files import File
from pyinfra.operations.apt import APT_UPDATE_FILENAME
from roles.install import apt_packages

real_get_fact = host.get_fact
def get_fact(fact, *args, **kwargs):
    if fact is File and kwargs.get("path") == APT_UPDATE_FILENAME:
        return {"mtime": datetime.utcnow() - timedelta(days=1), "mode": 644, "size": 0}
    return real_get_fact(fact, *args, **kwargs)
host.get_fact = get_fact

apt_packages("installed", ["dpkg"])
apt_packages("pinned to what is installed", ["dpkg=" + host.data.get("dpkg_version")])
apt_packages("missing", ["dpkg", "homelab-ops-no-such-package"])
plan = {next(iter(state.op_meta[op_hash].names)): [str(c) for c in state.ops[host][op_hash].command_generator()]
        for op_hash in state.get_op_order()}
with open(host.data.get("plan_file"), "w") as out:
    json.dump(plan, out)
"""


@plans_on_this_machine
def test_only_a_package_to_install_refreshes_apts_lists(tmp_path):
    dpkg_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dpkg"], capture_output=True, text=True,
                                  check=True).stdout
    (tmp_path / "deploy.py").write_text(DEPLOY)
    plan_file = tmp_path / "plan.json"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "--dry", "--data", f"plan_file={plan_file}",
         "--data", f"dpkg_version={dpkg_version}", "@local", str(tmp_path / "deploy.py")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    plan = json.loads(plan_file.read_text())
    # A rerun on a converged node changes nothing, even a day after the last `apt-get update`.
    assert plan["installed"] == [] and plan["pinned to what is installed"] == []
    assert plan["missing"][0] == "apt-get update"
    assert "homelab-ops-no-such-package" in plan["missing"][-1]
