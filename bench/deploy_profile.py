#!/usr/bin/env python3
"""Where the seconds of a deploy go: pyinfra run in this process, with timers around what costs.

    .venv/bin/python bench/deploy_profile.py INVENTORY deploys/all.py [pyinfra options]

Runs `pyinfra -y INVENTORY DEPLOY` (same arguments, same output) and then prints:

- the phases' wall time: connecting, preparing (the deploy file run for each host: roles plan
  operations and read facts), executing (the planned operations' commands);
- per role, summed over its hosts: time inside the role's apply() while preparing, and of that
  the fact round trips to the node (count, seconds), template rendering, local commands (pip,
  promtool, git: by program), vault reads, bcrypt hashing of web logins; then the role's operations' time while executing and
  how many commands they sent;
- the facts that cost most, and the operations that cost most while executing.

Hosts are prepared concurrently (one gevent greenlet each), so a role's seconds are host-seconds:
time one host's greenlet spent in it, waiting on the network included, while other hosts' work
went on. Local work (rendering, commands, Python in the roles) does not overlap: it is on the one
core this process runs on. The totals per kind say which is which.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import gevent

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# host name -> the role whose apply() its greenlet is running ("-" outside any role).
CURRENT_ROLE: dict[object, str] = {}
# (role, kind) -> [count, seconds]; kind: apply, fact, render, command:<program>, vault, execute, remote.
COSTS: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
FACTS: dict[str, list] = defaultdict(lambda: [0, 0.0])
OPERATIONS: dict[str, list] = defaultdict(lambda: [0, 0.0])
PHASES: dict[str, float] = {}
PHASE_CPU: dict[str, float] = {}  # this process's CPU seconds per phase: what load on the machine does not inflate
OP_ROLE: dict[str, str] = {}
IN_FACT: set = set()
BATCHED = [0]  # facts read inside batches


def role_now() -> str:
    return CURRENT_ROLE.get(gevent.getcurrent(), "-")


@contextmanager
def charged(kind: str, role: str | None = None):
    started = time.perf_counter()
    try:
        yield
    finally:
        cost = COSTS[(role or role_now(), kind)]
        cost[0] += 1
        cost[1] += time.perf_counter() - started


def wrap(owner, name: str, kind_of):
    """Replace owner.name with a timed call charged to kind_of(*args) (a kind, or None: not timed)."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        kind = kind_of(*args, **kwargs)
        if kind is None:
            return original(*args, **kwargs)
        with charged(kind):
            return original(*args, **kwargs)

    setattr(owner, name, timed)
    return original


def instrument() -> None:
    import pyinfra.api.facts as facts
    import pyinfra.api.operations as operations
    import pyinfra_cli.cli as cli
    from pyinfra.connectors.ssh import SSHConnector

    from homelab import vault
    from homelab.topology import ROLES

    import roles.common as common

    # Each role's apply(), so that what happens inside is charged to it.
    for role in ROLES:
        module = import_module(f"roles.{role.name}")
        original_apply = module.apply

        def apply(*args, _original=original_apply, _name=role.name, **kwargs):
            from pyinfra import host, state

            greenlet = gevent.getcurrent()
            CURRENT_ROLE[greenlet] = _name
            before = set(state.ops[host])
            try:
                with charged("apply", _name):
                    return _original(*args, **kwargs)
            finally:
                CURRENT_ROLE[greenlet] = "-"
                for op_hash in set(state.ops[host]) - before:
                    OP_ROLE.setdefault(op_hash, _name)

        module.apply = apply

    original_get_fact = facts._get_fact

    def get_fact(state, host, cls, *args, **kwargs):
        started = time.perf_counter()
        greenlet = gevent.getcurrent()
        nested = greenlet in IN_FACT
        IN_FACT.add(greenlet)
        try:
            return original_get_fact(state, host, cls, *args, **kwargs)
        finally:
            if not nested:
                IN_FACT.discard(greenlet)
                elapsed = time.perf_counter() - started
                cost = COSTS[(role_now(), "fact")]
                cost[0] += 1
                cost[1] += elapsed
                FACTS[cls.__name__][0] += 1
                FACTS[cls.__name__][1] += elapsed

    facts._get_fact = get_fact

    # roles.fact_cache reads many facts in one command: one round trip, counted as "(batch of N)".
    import roles.fact_cache as fact_cache

    original_read_chunk = fact_cache._read_chunk

    def read_chunk(host, chunk):
        started = time.perf_counter()
        try:
            return original_read_chunk(host, chunk)
        finally:
            elapsed = time.perf_counter() - started
            cost = COSTS[(role_now(), "fact")]
            cost[0] += 1
            cost[1] += elapsed
            FACTS["(batch)"][0] += 1
            FACTS["(batch)"][1] += elapsed
            BATCHED[0] += sum(len(read.requests) for read in chunk)

    fact_cache._read_chunk = read_chunk

    wrap(common, "render", lambda *a, **k: "render")
    # Roles import render by name: rebind theirs too.
    for role in ROLES:
        module = sys.modules.get(f"roles.{role.name}")
        if module is not None and getattr(module, "render", None) is not None:
            module.render = common.render
    for name in ("roles.grafana_repo", "roles.python_app", "roles.pki.web"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "render"):
            module.render = common.render
    wrap(vault, "load_vault", lambda *a, **k: "vault")
    # The web configs' login hashes (roles.pki.web.bcrypt_hash), ~80 ms each.
    import bcrypt

    wrap(bcrypt, "hashpw", lambda *a, **k: "bcrypt")

    def command_kind(*args, **kwargs):
        argv = args[0] if args else kwargs.get("args")
        program = Path(argv[0] if isinstance(argv, (list, tuple)) else str(argv).split()[0]).name
        return f"command:{program}"

    wrap(subprocess, "run", command_kind)

    # Phases.
    def phase(owner, name, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - started
                PHASE_CPU[label] = PHASE_CPU.get(label, 0.0) + time.process_time() - cpu

        setattr(owner, name, timed)

    phase(cli, "connect_all", "connect")
    phase(cli, "load_deploy_file", "prepare")
    phase(cli, "run_ops", "execute")

    # Every command or file transfer sent to a node, in either phase.
    for name in ("run_shell_command", "put_file", "get_file"):
        wrap(SSHConnector, name, lambda *a, **k: "remote")

    # Each operation on each host while executing.
    original_run_host_op = operations._run_host_op

    def run_host_op(state, host, op_hash):
        started = time.perf_counter()
        role = OP_ROLE.get(op_hash, "-")
        greenlet = gevent.getcurrent()
        CURRENT_ROLE[greenlet] = role
        try:
            return original_run_host_op(state, host, op_hash)
        finally:
            CURRENT_ROLE[greenlet] = "-"
            elapsed = time.perf_counter() - started
            COSTS[(role, "execute")][0] += 1
            COSTS[(role, "execute")][1] += elapsed
            names = ", ".join(sorted(state.get_op_meta(op_hash).names))
            OPERATIONS[f"{role}: {names}"][0] += 1
            OPERATIONS[f"{role}: {names}"][1] += elapsed

    operations._run_host_op = run_host_op


def report(wall: float, cpu: float, startup_cpu: float) -> None:
    out = sys.stdout
    out.write("\n== where the seconds went ==\n")
    shown = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in PHASES.items() if name != "prepare (util)")
    out.write(f"wall {wall:.2f}s: {shown}\n")
    shown = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in PHASE_CPU.items())
    out.write(f"CPU of this process {startup_cpu + cpu:.2f}s: start-up (interpreter, imports of pyinfra_cli and "
              f"of the roles) {startup_cpu:.2f}s, {shown}\n")
    roles = sorted({role for role, _ in COSTS}, key=lambda r: -COSTS[(r, "apply")][1] - COSTS[(r, "execute")][1])
    kinds = sorted({kind for _, kind in COSTS if kind.startswith("command:")})
    header = ["role", "prepare s", "facts", "fact s", "render s", *[k.split(":", 1)[1] + " s" for k in kinds],
              "vault s", "bcrypt s", "execute s", "ops", "remote", "remote s"]
    out.write("".join(f"{h:>12}" if i else f"{h:<16}" for i, h in enumerate(header)) + "\n")
    totals = Counter()
    for role in roles:
        row = [COSTS[(role, "apply")][1], COSTS[(role, "fact")][0], COSTS[(role, "fact")][1],
               COSTS[(role, "render")][1], *[COSTS[(role, k)][1] for k in kinds], COSTS[(role, "vault")][1],
               COSTS[(role, "bcrypt")][1], COSTS[(role, "execute")][1], COSTS[(role, "execute")][0], COSTS[(role, "remote")][0],
               COSTS[(role, "remote")][1]]
        for i, value in enumerate(row):
            totals[i] += value
        out.write(f"{role:<16}" + "".join(f"{v:>12.2f}" if isinstance(v, float) else f"{v:>12}" for v in row) + "\n")
    out.write(f"{'total':<16}" + "".join(
        f"{totals[i]:>12.2f}" if isinstance(totals[i], float) else f"{totals[i]:>12}" for i in range(len(header) - 1)) + "\n")
    hashed = [COSTS[(role, "bcrypt")] for role in roles]
    out.write(f"bcrypt hashes computed: {sum(c for c, _ in hashed)}, {sum(s for _, s in hashed):.2f}s\n")
    out.write(f"\nfacts by cost (calls, host-seconds; {BATCHED[0]} facts read in batches):\n")
    for name, (count, seconds) in sorted(FACTS.items(), key=lambda item: -item[1][1])[:12]:
        out.write(f"  {seconds:7.2f}s {count:5} {name}\n")
    out.write("\noperations by cost while executing (hosts, host-seconds):\n")
    for name, (count, seconds) in sorted(OPERATIONS.items(), key=lambda item: -item[1][1])[:12]:
        out.write(f"  {seconds:7.2f}s {count:5} {name[:100]}\n")


def main() -> int:
    import pyinfra_cli.main as cli_main

    sys.path.insert(0, ".")  # as the pyinfra command does: roles/ and homelab from the repo root
    instrument()
    sys.argv = ["pyinfra", "-y", *sys.argv[1:]]
    startup_cpu = time.process_time()
    started, cpu = time.perf_counter(), time.process_time()
    code = 0
    try:
        cli_main.main()
    except SystemExit as exc:
        code = exc.code or 0
    report(time.perf_counter() - started, time.process_time() - cpu, startup_cpu)
    return code


if __name__ == "__main__":
    sys.exit(main())
