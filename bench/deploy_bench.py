#!/usr/bin/env python3
"""How the lab and the deploy scale with node count.

Prints, for 4 nodes (inventory/lab.py) and for 16 (a generated inventory): `lab up` cold (base
image built from scratch, only when --cold) and warm (image cached), the first deploy on fresh nodes
and a no-op rerun; then the 16/4 ratios. The base roles are deployed on both sizes so the two
figures compare the same work; `--stack` also times the whole stack (deploys/all.py) on the 4-node lab.

Targets (issue 2, 4): warm `lab up` of 4 nodes <= 10 s; no-op rerun on 4 nodes <= 5 s (base
roles) and <= 10 s (whole stack); on 16 nodes at most 2x the 4-node figure.

`--releases` instead compares Debian releases (issue 12): the whole stack on the 4 reference nodes
all on Debian 12, then all on Debian 13, in the same run: first deploy and the median of
NOOP_RUNS no-op reruns each, and the 13/12 ratio (target: no-op rerun on 13 no slower than on 12).

`--profile` instead profiles the whole stack's no-op rerun on the 4-node lab (issue 17), with
pki.tls off and then on: it brings the lab up (reusing a running one) and deploys once so that it
is converged, then times NOOP_RUNS plain no-op reruns (median) and runs one more under
bench/deploy_profile.py, which prints where
its seconds go per role (fact round trips, rendering, local commands such as promtool and pip,
vault reads, the operations' execution) and the costliest facts and operations. It leaves the
lab up, deployed with TLS off.

`--noop` instead judges issue 17's targets in one run: on the 4-node lab brought up fresh, the
whole stack's first deploy, the median of NOOP_RUNS no-op reruns, and of NOOP_RUNS reruns limited to
toy-redis's host (`--limit`); then the same lab grown by GROWN_BY nodes that get only the roles
every host gets (as a cluster grows by plain workers, all scraped by Prometheus), converged, and the
median of its no-op reruns against the 4-node figure; then the lab shrunk back to its 4 nodes and
their reruns again, the 4-node figure being the median of both sets (the machine's speed drifts
within minutes); each set of reruns after SETTLE_S of rest. Both no-op figures are also taken in a
pseudo-terminal, as a person runs the deploy (pyinfra's progress spinner is drawn only there), and
printed beside. It takes the lab down at the end.

`--against REF` instead times the whole stack's no-op rerun on the 4-node lab for this tree and for
git REF (checked out in a temporary worktree), with pki.tls off and on, alternating the trees run
by run (--runs each, median): a change's effect measured under the same load, and each tree's TLS
on/off ratio (issue 13's target: at most 1.2x). Each run's CPU seconds (the pyinfra process and what it
runs locally) are printed too: on a shared machine they vary far less than wall time. It leaves the
lab up and deployed, TLS off. The other tree runs with its own src/ first on PYTHONPATH, so its
roles import its own homelab package, not this checkout's (the venv's editable install).

`--against REF --grown` instead compares the two trees on issue 17's scaling target: alternating
no-op reruns on the 4-node lab, then on the lab grown by GROWN_BY plain workers (converged by this
tree, SETTLE_S of rest), medians and each tree's grown/4 ratio; the lab is back to its 4 nodes,
deployed, at the end. `--against REF --first-deploy` instead times first deploys of the 4 fresh
nodes (lab taken down and up before each), the trees alternating, --runs each; it leaves the lab
deployed by this tree.

Run as root from the repo root: .venv/bin/python bench/deploy_bench.py [--cold] [--stack | --releases | --profile | --noop |
    --against REF [--grown | --first-deploy]]
It takes the lab down at the start and at the end (except --profile and --against).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from homelab.lab.nodes import cgroup_parents
from homelab.lab.settings import lab_settings
from homelab.topology import ROLES, Topology

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The roles every host gets, whatever its groups.
BASE_ROLES = ",".join(role.name for role in ROLES if role.group is None)
# Bounded: a hung command fails the bench instead of stalling it.
COMMAND_TIMEOUT_S = 900
NOOP_RUNS = 3
# Group data that turns TLS and logins on for the whole cluster (issue 13), given on the command line.
TLS_ON = ["--data", 'pki={"tls": true}']
# Issue 17's targets for the whole stack: the no-op rerun on 4 nodes, on 4 + GROWN_BY nodes against
# that, and limited to one node.
NOOP_TARGET_S = 4.0
GROWN_NOOP_RATIO = 1.5
LIMITED_NOOP_TARGET_S = 1.5
GROWN_BY = 12
# Issue 17's first deploy of 4 fresh nodes: "no slower than today", measured at stop 8 (issue 4),
# before pki, TLS, the firewall, the relay's wheels and Alloy joined the stack.
FIRST_DEPLOY_TARGET_S = 71.6
# After a converging deploy, fresh nodes keep working for a while (services starting, Prometheus
# reading new targets): the 16-node reruns right after converging 12 new nodes ran at load 10.
SETTLE_S = 60
# The terminal the no-op is also timed in: pyinfra's spinner lists what is still running, up to its width.
TERMINAL_COLUMNS = 120


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(*cmd: str, cwd: Path = REPO, cpu: list[float] | None = None) -> float:
    """Wall seconds of ``cmd``; its CPU seconds appended to ``cpu`` when given (the machine's load
    stretches wall time, much less the CPU a run needs)."""
    start, cpu_start = time.monotonic(), children_cpu()
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=COMMAND_TIMEOUT_S, env=tree_env(cwd))
    except subprocess.TimeoutExpired:
        sys.exit(f"bench: {' '.join(cmd)} did not finish within {COMMAND_TIMEOUT_S} s")
    elapsed = time.monotonic() - start
    if cpu is not None:
        cpu.append(children_cpu() - cpu_start)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}{result.stdout[-2000:]}")
    return elapsed


def lab_cpu() -> float:
    """CPU seconds the lab's nodes have used so far (their cgroup's cpu.stat; 0 where there is none):
    what a deploy costs the nodes, which the machine's other load does not inflate."""
    for parent in cgroup_parents():
        try:
            stat = (parent / lab_settings().bridge / "cpu.stat").read_text()
        except OSError:
            continue
        return int(stat.split("usage_usec ", 1)[1].split()[0]) / 1e6
    return 0.0


def tree_env(tree: Path) -> dict[str, str]:
    """The environment a command run in ``tree`` gets: another checkout's packages ahead of the
    venv's editable installs of this one, so that its deploy imports its own homelab (src/homelab)
    and its own nested packages (src/<name>/<name>)."""
    if tree == REPO:
        return dict(os.environ)
    src = tree / "src"
    paths = [src, *sorted(folder for folder in src.iterdir() if (folder / folder.name / "__init__.py").exists())]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])}


@contextlib.contextmanager
def checked_out(ref: str):
    """git ``ref`` in a temporary worktree beside this one, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="homelab-bench-base-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(base), ref], check=True)
    try:
        yield base
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)


def generated_inventory(nodes: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="homelab-bench-")) / f"bench{nodes}.py"
    lines = ["from homelab.lab.settings import lab_host", "", "nodes = ["]
    lines += [f'    lab_host("bench-node-{i:02d}", {10 + i}),' for i in range(1, nodes + 1)]
    lines += ["]", ""]
    path.write_text("\n".join(lines))
    return path


def reference_lab_on(release: int) -> Path:
    """inventory/lab.py with every host on ``release``; group data still from inventory/group_data."""
    path = Path(tempfile.mkdtemp(prefix="homelab-bench-")) / f"lab_debian{release}.py"
    path.write_text(
        "import runpy\n"
        f"_lab = runpy.run_path({str(REPO / 'inventory' / 'lab.py')!r})\n"
        "for _group, _members in _lab.items():\n"
        "    if not _group.startswith('_') and isinstance(_members, list):\n"
        f"        globals()[_group] = [(name, {{**data, 'debian_release': {release}}}) for name, data in _members]\n"
    )
    return path


def measure_release(release: int) -> dict[str, float]:
    inventory = reference_lab_on(release)
    lab, pyinfra = str(BIN / "lab"), str(BIN / "pyinfra")
    deploy = [pyinfra, "-y", "--group-data", str(REPO / "inventory" / "group_data"), str(inventory), "deploys/all.py"]
    timed(lab, "up", str(inventory))  # recreates nodes of the other release
    figures = {"first deploy": timed(*deploy)}
    figures["no-op rerun"] = statistics.median(timed(*deploy) for _ in range(NOOP_RUNS))
    return figures


def compare_releases() -> None:
    timed(str(BIN / "lab"), "down")
    results = {release: measure_release(release) for release in (12, 13)}
    timed(str(BIN / "lab"), "down")
    print(f"{'whole stack, 4 nodes':24}{'first deploy':>16}{'no-op rerun':>16}")
    for release, figures in results.items():
        print(f"{'Debian ' + str(release):24}{figures['first deploy']:>15.2f}s{figures['no-op rerun']:>15.2f}s")
    for name in ("first deploy", "no-op rerun"):
        print(f"13/12 ratio, {name}: {results[13][name] / results[12][name]:.2f}x")


def grown_lab(extra: int) -> Path:
    """inventory/lab.py with its group data, plus ``extra`` nodes in a group of no role."""
    folder = Path(tempfile.mkdtemp(prefix="homelab-bench-"))
    shutil.copytree(REPO / "inventory", folder, dirs_exist_ok=True)
    with open(folder / "lab.py", "a") as lab_inventory:
        # Lab indexes from 20 up: clear of the reference nodes' (homelab's _LAB_INDEX, 10-14).
        lab_inventory.write("\nfrom homelab.lab.settings import lab_host as _bench_host\n"
                            f"bench_workers = [_bench_host(f'bench-node-{{i:02d}}', 20 + i) for i in range(1, {extra + 1})]\n")
    return folder / "lab.py"


def noop_targets() -> None:
    lab, pyinfra = str(BIN / "lab"), str(BIN / "pyinfra")
    four, grown = REPO / "inventory" / "lab.py", grown_lab(GROWN_BY)
    limited_host = Topology.load(four).hosts_of("toy_redis")[0]
    cpu: list[float] = []

    def deploy(inventory: Path, *limit: str, terminal: bool = False) -> float:
        command = [pyinfra, "-y", str(inventory), "deploys/all.py", *limit]
        return timed(*(in_terminal(command) if terminal else command), cpu=cpu)

    def reruns(inventory: Path, *limit: str, terminal: bool = False) -> Reruns:
        cpu.clear()
        load = os.getloadavg()[0]
        walls = [deploy(inventory, *limit, terminal=terminal) for _ in range(NOOP_RUNS)]
        return Reruns(walls, list(cpu), load)

    timed(lab, "down")
    timed(lab, "up", str(four))
    first = deploy(four)
    time.sleep(SETTLE_S)
    four_before, four_before_terminal = reruns(four), reruns(four, terminal=True)
    limited = reruns(four, "--limit", limited_host)
    timed(lab, "up", str(grown))  # boots the extra nodes beside the 4 deployed ones
    grow = deploy(grown)
    time.sleep(SETTLE_S)
    sixteen, sixteen_terminal = reruns(grown), reruns(grown, terminal=True)
    # And 4 nodes again (the extra nodes removed, Prometheus's targets back to the 4): this machine's
    # speed drifts by tens of percent within minutes, which between the two figures would read as
    # scaling. The 4-node figure is the median of the reruns before growing and after.
    timed(lab, "up", str(four))
    deploy(four)
    time.sleep(SETTLE_S)
    four_after, four_after_terminal = reruns(four), reruns(four, terminal=True)
    timed(lab, "down")
    shutil.rmtree(grown.parent)
    noop, noop_terminal = four_before + four_after, four_before_terminal + four_after_terminal
    print("whole stack, medians of no-op reruns (CPU: the pyinfra process and what it runs; load: the load "
          "average before them):")
    print(f"  4 nodes: {noop.wall:.2f}s (CPU {noop.cpu:.2f}s; before growing {four_before}, after {four_after}), "
          f"target <= {NOOP_TARGET_S}s: {verdict(noop.wall <= NOOP_TARGET_S)}")
    print(f"  --limit {limited_host}: {limited}, target <= {LIMITED_NOOP_TARGET_S}s: "
          f"{verdict(limited.wall <= LIMITED_NOOP_TARGET_S)}")
    print(f"  {4 + GROWN_BY} nodes: {sixteen}, {sixteen.wall / noop.wall:.2f}x the 4 nodes' (CPU "
          f"{sixteen.cpu / noop.cpu:.2f}x), target <= {GROWN_NOOP_RATIO}x: {verdict(sixteen.wall / noop.wall <= GROWN_NOOP_RATIO)}")
    print(f"  in a terminal of {TERMINAL_COLUMNS} columns (pyinfra's progress spinner on): 4 nodes "
          f"{noop_terminal.wall:.2f}s, {4 + GROWN_BY} nodes {sixteen_terminal.wall:.2f}s "
          f"({sixteen_terminal.wall / noop_terminal.wall:.2f}x)")
    print(f"first deploy of 4 fresh nodes: {first:.1f}s, target <= {FIRST_DEPLOY_TARGET_S}s (a smaller stack's): "
          f"{verdict(first <= FIRST_DEPLOY_TARGET_S)}; converging the {GROWN_BY} added nodes: {grow:.1f}s")


@dataclass(frozen=True)
class Reruns:
    """No-op reruns: their wall and CPU seconds, and the load average before them."""

    walls: list[float]
    cpus: list[float]
    load: float

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    def __add__(self, other: "Reruns") -> "Reruns":
        return Reruns(self.walls + other.walls, self.cpus + other.cpus, max(self.load, other.load))

    def __str__(self) -> str:
        return f"{self.wall:.2f}s (CPU {self.cpu:.2f}s, load {self.load:.1f}, {len(self.walls)} runs)"


def in_terminal(command: list[str]) -> list[str]:
    """``command`` run in a pseudo-terminal, as a person runs it: pyinfra draws its progress spinner
    only when stdout and stderr are terminals (a 16-node no-op once spent 1.3 s of CPU on it)."""
    return ["script", "-qec", f"stty cols {TERMINAL_COLUMNS} && exec {shlex.join(command)}", "/dev/null"]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def measure(inventory: Path, roles: str, cold: bool) -> dict[str, float]:
    lab, pyinfra = str(BIN / "lab"), str(BIN / "pyinfra")
    deploy = [pyinfra, "-y", str(inventory), "deploys/all.py", "--data", f"only_roles={roles}"] if roles else \
             [pyinfra, "-y", str(inventory), "deploys/all.py"]
    figures = {}
    timed(lab, "down", *(["--purge"] if cold else []))
    figures["lab up (cold)" if cold else "lab up (first)"] = timed(lab, "up", str(inventory))
    figures["first deploy"] = timed(*deploy)
    figures["no-op rerun"] = timed(*deploy)
    timed(lab, "down")
    figures["lab up (warm)"] = timed(lab, "up", str(inventory))
    timed(lab, "down")
    return figures


def profile_noop() -> None:
    inventory = str(REPO / "inventory" / "lab.py")
    timed(str(BIN / "lab"), "up", inventory)
    for label, data in (("TLS off", []), ("TLS on", TLS_ON)):
        deploy = [str(BIN / "pyinfra"), "-y", inventory, "deploys/all.py", *data]
        converge = timed(*deploy)
        noop = statistics.median(timed(*deploy) for _ in range(NOOP_RUNS))
        result = subprocess.run([sys.executable, str(REPO / "bench" / "deploy_profile.py"), inventory, "deploys/all.py",
                                 *data], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            sys.exit(f"bench: the profiled run failed ({result.returncode}):\n{result.stderr[-3000:]}{result.stdout[-2000:]}")
        print(f"whole stack, 4 nodes, {label}: converging run {converge:.2f}s, no-op rerun {noop:.2f}s "
              f"(median of {NOOP_RUNS})")
        print(result.stdout[result.stdout.index("== where the seconds went =="):], flush=True)
    timed(str(BIN / "pyinfra"), "-y", inventory, "deploys/all.py")  # the lab's own settings back


def compare_with(ref: str, runs: int) -> None:
    """The whole stack's no-op rerun on the 4-node lab, this tree against git ``ref`` checked out
    beside it, with pki.tls off and on: ``runs`` reruns of each, alternating, so that the machine's
    load falls on both alike; medians, ratios, and the TLS on/off ratio of each (issue 13)."""
    pyinfra = str(BIN / "pyinfra")
    medians: dict[tuple, float] = {}
    with checked_out(ref) as base:
        trees = {ref: base, "this tree": REPO}
        timed(str(BIN / "lab"), "up", str(REPO / "inventory" / "lab.py"))
        for label, data in (("TLS off", []), ("TLS on", TLS_ON)):
            timed(pyinfra, "-y", "inventory/lab.py", "deploys/all.py", *data)  # converge
            times, cpu = alternate(trees, runs, lambda: ("inventory/lab.py", "deploys/all.py", *data))
            for name in trees:
                medians[(name, label)] = statistics.median(times[name])
                medians[(name, label, "cpu")] = statistics.median(cpu[name]["pyinfra"])
                print(f"{label}, {name}: no-op rerun {spread(times[name], cpu[name])}", flush=True)
        timed(pyinfra, "-y", "inventory/lab.py", "deploys/all.py")  # the lab's own settings back
    for label in ("TLS off", "TLS on"):
        print(f"{label}: this tree / {ref} = {medians[('this tree', label)] / medians[(ref, label)]:.2f}x, "
              f"CPU {medians[('this tree', label, 'cpu')] / medians[(ref, label, 'cpu')]:.2f}x "
              f"(load average now {os.getloadavg()[0]:.1f})")
    for name in trees:
        print(f"{name}: TLS on / off = {medians[(name, 'TLS on')] / medians[(name, 'TLS off')]:.2f}x "
              f"(issue 13 target <= 1.2x)")


def alternate(trees: dict[str, Path], runs: int, arguments, before=None) -> tuple[dict, dict]:
    """``runs`` timed pyinfra runs of each tree, alternating; ``arguments()`` gives a run's
    arguments, ``before(tree)`` (untimed) what precedes each run. Wall seconds per tree, and CPU
    seconds per tree: "pyinfra" (the process and what it runs locally) and "nodes" (the lab's)."""
    times: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, dict[str, list[float]]] = {name: {"pyinfra": [], "nodes": []} for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            if before is not None:
                before(tree)
            nodes_before = lab_cpu()
            times[name].append(timed(str(BIN / "pyinfra"), "-y", *arguments(), cwd=tree, cpu=cpu[name]["pyinfra"]))
            cpu[name]["nodes"].append(lab_cpu() - nodes_before)
    return times, cpu


def spread(times: list[float], cpu: dict[str, list[float]]) -> str:
    shown = "; ".join(f"CPU of {kind} median {statistics.median(values):.2f}s of {' '.join(f'{v:.2f}' for v in values)}"
                      for kind, values in cpu.items())
    return f"median {statistics.median(times):.2f}s of {' '.join(f'{t:.2f}' for t in times)}; {shown}"


def compare_grown_with(ref: str, runs: int) -> None:
    """Issue 17's scaling target for this tree and git ``ref``, alternating: no-op reruns on the
    4-node lab, then on the lab grown by GROWN_BY plain workers; each tree's grown/4 ratio."""
    lab, pyinfra = str(BIN / "lab"), str(BIN / "pyinfra")
    four, grown = REPO / "inventory" / "lab.py", grown_lab(GROWN_BY)
    medians: dict[tuple, float] = {}
    with checked_out(ref) as base:
        trees = {ref: base, "this tree": REPO}
        try:
            for label, inventory in (("4 nodes", four), (f"{4 + GROWN_BY} nodes", grown)):
                timed(lab, "up", str(inventory))
                converge = timed(pyinfra, "-y", str(inventory), "deploys/all.py")
                # Untimed: a checkout's first run builds its wheels, and writes its fact listings.
                alternate(trees, 1, lambda: (str(inventory), "deploys/all.py"))
                time.sleep(SETTLE_S)
                load = os.getloadavg()[0]
                times, cpu = alternate(trees, runs, lambda: (str(inventory), "deploys/all.py"))
                print(f"{label} (converged in {converge:.1f}s, load {load:.1f} before the reruns):", flush=True)
                for name in trees:
                    medians[(name, label)] = statistics.median(times[name])
                    medians[(name, label, "cpu")] = statistics.median(map(sum, zip(*cpu[name].values())))
                    print(f"  {name}: no-op rerun {spread(times[name], cpu[name])}", flush=True)
        finally:
            timed(lab, "up", str(four))  # the grown lab's extra nodes removed
            timed(pyinfra, "-y", str(four), "deploys/all.py")  # Prometheus's targets back to the 4
            shutil.rmtree(grown.parent)
    grown_label = f"{4 + GROWN_BY} nodes"
    for name in trees:
        ratio = medians[(name, grown_label)] / medians[(name, "4 nodes")]
        cpu_ratio = medians[(name, grown_label, "cpu")] / medians[(name, "4 nodes", "cpu")]
        print(f"{name}: {grown_label}/4 nodes = {ratio:.2f}x (CPU of pyinfra and nodes {cpu_ratio:.2f}x), "
              f"target <= {GROWN_NOOP_RATIO}x: {verdict(ratio <= GROWN_NOOP_RATIO)}")
    for label in ("4 nodes", grown_label):
        print(f"{label}: this tree / {ref} = {medians[('this tree', label)] / medians[(ref, label)]:.2f}x, CPU of "
              f"pyinfra and nodes {medians[('this tree', label, 'cpu')] / medians[(ref, label, 'cpu')]:.2f}x")


def compare_first_deploy_with(ref: str, runs: int) -> None:
    """Issue 17's first-deploy target judged fairly: first deploys of the 4 fresh lab nodes by this
    tree and by git ``ref``, alternating (the lab down and up before each), medians of ``runs``."""
    lab = str(BIN / "lab")

    def fresh_lab(_tree: Path) -> None:
        # This tree's lab tool for both: the nodes differ only by what is deployed on them.
        timed(lab, "down")
        timed(lab, "up", str(REPO / "inventory" / "lab.py"))

    with checked_out(ref) as base:
        trees = {ref: base, "this tree": REPO}
        times, cpu = alternate(trees, runs, lambda: ("inventory/lab.py", "deploys/all.py"), before=fresh_lab)
    for name in trees:
        print(f"first deploy of 4 fresh nodes, {name}: {spread(times[name], cpu[name])}")
    ratio = statistics.median(times["this tree"]) / statistics.median(times[ref])
    print(f"this tree / {ref} = {ratio:.2f}x (load average now {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also rebuild the base image (about a minute)")
    parser.add_argument("--stack", action="store_true", help="also time the whole stack on 4 nodes")
    parser.add_argument("--releases", action="store_true",
                        help="only compare the whole stack on Debian 12 and Debian 13 nodes")
    parser.add_argument("--profile", action="store_true",
                        help="only profile the whole stack's no-op rerun on the 4-node lab (left up)")
    parser.add_argument("--noop", action="store_true",
                        help="only judge issue 17's no-op targets: 4 nodes, --limit one node, 16 nodes, first deploy")
    parser.add_argument("--against", metavar="GIT_REF",
                        help="only compare the whole stack's no-op rerun with this git ref's, TLS off and on, "
                             "alternating (e.g. main, to measure a change before landing it)")
    parser.add_argument("--grown", action="store_true",
                        help="with --against: no-op reruns on 4 nodes, then on 4 + GROWN_BY, each tree's ratio")
    parser.add_argument("--first-deploy", action="store_true",
                        help="with --against: first deploys of the 4 fresh lab nodes, alternating")
    parser.add_argument("--runs", type=int, default=5, help="runs of each tree per setting for --against")
    args = parser.parse_args()
    if (args.grown or args.first_deploy) and not args.against:
        parser.error("--grown and --first-deploy compare with --against REF")
    if args.against and args.grown:
        compare_grown_with(args.against, args.runs)
        return
    if args.against and args.first_deploy:
        compare_first_deploy_with(args.against, args.runs)
        return
    if args.against:
        compare_with(args.against, args.runs)
        return
    if args.noop:
        noop_targets()
        return
    if args.profile:
        profile_noop()
        return
    if args.releases:
        compare_releases()
        return

    results = {
        "4 nodes": measure(REPO / "inventory" / "lab.py", BASE_ROLES, args.cold),
        "16 nodes": measure(generated_inventory(16), BASE_ROLES, False),
    }
    if args.stack:
        results["4 nodes, whole stack"] = measure(REPO / "inventory" / "lab.py", "", False)

    names = list(dict.fromkeys(name for figures in results.values() for name in figures))
    print(f"{'':24}" + "".join(f"{name:>16}" for name in names))
    for label, figures in results.items():
        print(f"{label:24}" + "".join(f"{figures[n]:>15.2f}s" if n in figures else f"{'-':>16}" for n in names))
    four, sixteen = results["4 nodes"], results["16 nodes"]
    for name in ("lab up (warm)", "first deploy", "no-op rerun"):
        print(f"16/4 ratio, {name}: {sixteen[name] / four[name]:.2f}x")


if __name__ == "__main__":
    main()
