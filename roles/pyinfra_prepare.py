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
and the same operation hashes) and the second is computed once. Installed by deploys/all.py.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module

import pyinfra

# By module path: pyinfra.api re-exports functions named like these modules (operation, facts).
operation = import_module("pyinfra.api.operation")
arguments = import_module("pyinfra.api.arguments")
facts = import_module("pyinfra.api.facts")
util = import_module("pyinfra.api.util")

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


def install() -> None:
    """Swap both in (once per process); pyinfra's modules look them up by name at each call."""
    operation.get_operation_order_from_stack = get_operation_order_from_stack
    arguments.all_global_arguments = all_global_arguments
    facts.all_global_arguments = all_global_arguments
