"""pyinfra's prepare phase without its repeated introspection: same results, a fraction of the CPU.

Profiling a no-op run of deploys/all.py (bench/deploy_profile.py, cProfile) showed most of the
control machine's CPU going to two things pyinfra 3 recomputes for every operation it plans:

- the operation's place in the run (pyinfra.api.util.get_operation_order_from_stack): the line
  numbers of the call stack from the deploy file down. It calls inspect.stack(), which builds the
  source context of every frame (inspect.getmodule walks all of sys.modules, per frame), then
  getframeinfo() on each frame again, to use only each frame's file name and line number;
- the global arguments' types (pyinfra.api.arguments.all_global_arguments): typing.get_type_hints
  of a TypedDict, evaluated anew for every operation and every fact read.

Here the first walks the frames itself (the same file names and line numbers, so the same order
and the same operation hashes) and the second is computed once.

A third cost grows with the hosts: host data. Every operation and every fact read asks each global
argument's host default (host.data._sudo, ... some thirty names, nearly all unset), and pyinfra's
HostData answers each by merging the host's groups' data into a new dict and walking five layers.
Here the inventory's layers (override, host, groups, all) are merged once per host; the host's own
overrides (host.data.x = ...) and the current @deploy's data defaults are still read at each call,
in pyinfra's order. Inventory data is fixed once the inventory is built (pyinfra's CLI builds it,
group data included, before any deploy code runs). And each operation's global arguments look the
layers up once (pop_global_arguments), not once per argument. Installed by deploys/all.py.
"""

from __future__ import annotations

import sys
from copy import copy
from functools import cache
from importlib import import_module

import gevent
import pyinfra
from pyinfra.context import ctx_state
from pyinfra.progress import progress_spinner

from roles import fact_cache

# By module path: pyinfra.api re-exports functions named like these modules (operation, facts).
operation = import_module("pyinfra.api.operation")
arguments = import_module("pyinfra.api.arguments")
facts = import_module("pyinfra.api.facts")
util = import_module("pyinfra.api.util")
operations = import_module("pyinfra.api.operations")

host_module = import_module("pyinfra.api.host")

_ORIGINAL = {"arguments": arguments.all_global_arguments}


def get_operation_order_from_stack(state) -> list[int]:
    """pyinfra's get_operation_order_from_stack, reading only what it uses of each frame.

    inspect.getframeinfo(frame).filename is the frame's code's file name (inspect returns it as is
    for a source file, and falls back to it otherwise) and .lineno is frame.f_lineno.
    """
    frames = []
    frame = sys._getframe(1)  # the caller: pyinfra's own (its install dir is skipped below anyway)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()

    i = 0
    # As pyinfra does: from the *first* frame of the deploy file (or the last frame if none is).
    if state.current_deploy_filename:
        for i, frame in enumerate(frames):
            if frame.f_code.co_filename == state.current_deploy_filename:
                break

    line_numbers = []
    if pyinfra.is_cli:
        line_numbers.append(state.current_op_file_number)
    for frame in frames[i:]:
        if frame.f_code.co_filename.startswith(util.PYINFRA_INSTALL_DIR):
            continue
        line_numbers.append(frame.f_lineno)
    return line_numbers


@cache
def _global_arguments() -> tuple:
    return tuple(_ORIGINAL["arguments"]())


def all_global_arguments() -> list[tuple[str, type]]:
    return list(_global_arguments())


def _inventory_data(host) -> dict:
    """The host's inventory layers merged as HostData reads them: override data over the host's,
    over its groups' (the last group winning, as get_groups_data merges them), over the inventory's."""
    inventory = host.inventory
    merged: dict = {}
    for layer in (inventory.get_data(), inventory.get_groups_data(host.groups),
                  inventory.get_host_data(host.name), inventory.get_override_data()):
        merged.update(layer)
    return merged


def _data_layers(data) -> tuple[dict, dict, dict]:
    """A HostData's layers, first match wins: the host's own assignments, the inventory's (merged
    once per host, kept on the Host out of the data's namespace), the current @deploy's defaults."""
    host = data.__dict__["host"]
    inventory_data = host.__dict__.get("_inventory_data")
    if inventory_data is None:
        inventory_data = host.__dict__["_inventory_data"] = _inventory_data(host)
    return data.__dict__["override_datas"], inventory_data, host.get_deploy_data()


def host_data_getattr(self, key: str):
    """HostData.__getattr__ reading _data_layers: the same value (a shallow copy, as pyinfra
    returns) from the same layer."""
    for layer in _data_layers(self):
        if key in layer:
            return copy(layer[key])
    raise AttributeError(f"Host `{self.__dict__['host']}` has no data `{key}`")


@cache
def _global_argument_names() -> frozenset[str]:
    return frozenset(name for name, _type in _global_arguments())


def pop_global_arguments(state, host, kwargs: dict) -> tuple[dict, list[str]]:
    """pyinfra's pop_global_arguments with the host defaults looked up once per call.

    pyinfra asks host.data for each of its ~35 global arguments (nearly all unset, so each a raised
    and caught AttributeError): 0.13 ms per operation, some 40% of planning a plain worker's
    operations (a 16-node no-op: 98 ms of the run's CPU; 30 ms here). Here the data layers are
    searched for the global arguments' names in one set intersection per layer; every other step
    (config defaults, handlers, type checks, the arguments popped from kwargs) is pyinfra's, in its
    order."""
    config = state.config
    if arguments.ctx_config.isset():
        config = arguments.ctx_config.get()
    meta_kwargs = host.current_deploy_kwargs or {}
    host_defaults: dict = {}
    names = _global_argument_names()
    for layer in reversed(_data_layers(host.data)):  # the first layer wins: applied last
        for key in names.intersection(layer):
            host_defaults[key] = copy(layer[key])

    popped: dict = {}
    found_keys: list[str] = []
    for key, type_ in _global_arguments():
        argument_meta = arguments.all_argument_meta[key]
        default = host_defaults[key] if key in host_defaults else argument_meta.default(config)
        if key in kwargs:
            found_keys.append(key)
            value = kwargs.pop(key)
        else:
            value = meta_kwargs.get(key, default)
        if argument_meta.handler:
            value = argument_meta.handler(config, value)
        if value != default:
            arguments.raise_if_bad_type(value, type_, arguments.ArgumentTypeError, f"Invalid argument `{key}`:")
        popped[key] = value
    return popped, found_keys


def hosts_run_independently() -> None:
    """This run's hosts each run their operations without waiting for the others at every operation
    (as pyinfra's --no-wait), unless the command line asks for --serial.

    pyinfra's default makes every host wait at each operation for the slowest one, so a first
    deploy took the sum over all operations of the slowest host's time: one node's wheel install
    held the three others, then the next role's install on another node held it. The stack's roles
    need no order between hosts: each configures its own node from the topology (certificates and
    rendered files come from the control machine). Calls to another node's service during a run
    tolerate it being down, as on a first deploy: a restart silence that finds Alertmanager
    restarting goes on without one, with a warning; Promtail and Alloy retry Loki. A failure stops
    only its host, as before. Measured on the 4-node lab, first deploy: 51.5 s against 70.5 s; a
    no-op rerun: the same (0.99x).

    Not pyinfra's own --no-wait (3.10): a failed operation there raises out of the host's greenlet,
    which prints a traceback, and the host is never counted as failed, so the run exits 0. Here the
    host is failed as --serial fails it. A run with an operation that must go host by host (_serial) or
    on one host (_run_once) runs as pyinfra runs it. Only through pyinfra's command line (the API's caller picks
    its own mode)."""
    cli = sys.modules.get("pyinfra_cli.cli")
    if cli is None or getattr(cli.run_ops, "hosts_independent", False):
        return
    run_ops = cli.run_ops

    def run_hosts_independently(state, serial: bool = False, no_wait: bool = False):
        if serial or any(meta.global_arguments[name]
                         for meta in state.op_meta.values() for name in ("_serial", "_run_once")):
            return run_ops(state, serial=serial, no_wait=no_wait)  # host by host, or one host: pyinfra's
        state.is_executing = True
        with ctx_state.use(state):
            _run_each_host(state)

    run_hosts_independently.hosts_independent = True
    cli.run_ops = run_hosts_independently


def _run_each_host(state) -> None:
    """Every active host's operations in a greenlet of its own; hosts whose operation failed are
    failed together at the end (failing the last host raises "No hosts remaining!", which must
    reach the command line, not die in a greenlet).

    Each host goes through its own operations only, each announced with the host's name: pyinfra's
    --no-wait prints every operation's nameless header once per host and a "Skipped" line for each
    operation a host does not have (two lines per host for each of ~140 operations, most of a
    16-node no-op's output)."""
    hosts = list(state.inventory.get_active_hosts())
    op_order = state.get_op_order()  # a topological sort of every operation: once, not per host
    failed = set()

    def run_host(host) -> None:
        try:
            for op_hash in op_order:
                if op_hash in state.ops[host]:
                    util.log_operation_start(state.get_op_meta(op_hash), prefix=host.print_prefix)
                    if operations._run_host_op_with_context(state, host, op_hash) is False:
                        failed.add(host)  # pyinfra has logged why
                        return
            fact_cache.executed_reads_remembered(host)
        finally:
            progress(host)

    # The spinner lists the hosts still running. Not one item per host and operation: in a terminal
    # pyinfra's spinner formats every remaining item at each step, which made a 16-node no-op
    # (2,400 items) spend 1.3 s of CPU on it.
    with progress_spinner(hosts) as progress:
        gevent.joinall([state.pool.spawn(run_host, host) for host in hosts])
    state.fail_hosts(failed)


def install() -> None:
    """Swap them in (once per process); pyinfra's modules look them up by name at each call."""
    operation.get_operation_order_from_stack = get_operation_order_from_stack
    # Each operation call checks its arguments against its function's signature, built anew each time.
    operation.signature = fact_cache.cached_signature
    arguments.all_global_arguments = all_global_arguments
    facts.all_global_arguments = all_global_arguments
    host_module.HostData.__getattr__ = host_data_getattr
    for module in (operation, facts, import_module("pyinfra.api.deploy")):
        module.pop_global_arguments = pop_global_arguments
