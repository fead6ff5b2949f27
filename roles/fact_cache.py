"""Fact values kept while a node cannot have changed, and read in batches: pyinfra 3 keeps none.

pyinfra 3 runs an operation's fact commands when the operation executes and caches nothing, so a
no-op rerun asked every node the same things many times (DebPackages for each apt.packages, the
release for each role) and read each managed file's File and Sha1File in round trips of their own:
about 66 SSH round trips per node.

Here, per host:
- a fact's value (same fact, same arguments, same connector arguments such as sudo) is kept until
  anything that may change the node runs on it: any command, upload or download an operation sends
  (a fact's own command does not count). A kept value is therefore what the node would answer now;
- before the first operation executes on a host, the facts its operations will ask for are read in a
  few batched round trips: each pending operation's commands are generated with facts answered
  from the kept values, the facts still missing are collected, read in one command, and the round
  repeats for facts that depend on those. Each fact runs its own command and parser, so values are
  exactly pyinfra's; a fact that fails, lacks its program or cannot be parsed is left out of the
  batch and read the ordinary way, where pyinfra reports it.

- the facts the host's planning and operations asked on the previous run (fact names and
  arguments, remembered per host on the control machine, never values) are read in one batch
  before its planning (planning_reads_batched); then no operation misses a kept value and the
  look-ahead above never runs: one round trip per converged node instead of three (planning's,
  then the look-ahead's two rounds).

So a converged node answers in one round trip, a node whose deploy changed since the last run in
about as many as the deepest chain of dependent facts, and a run that changes things pays at most
what plain pyinfra pays. Installed by roles.common.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import pickle
import re
import secrets
import shlex
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from functools import cache
from inspect import signature
from pathlib import Path
from typing import Any

import gevent
from pyinfra import logger
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.command import StringCommand
from pyinfra.api.facts import FactBase, _handle_fact_kwargs, _make_command
from pyinfra.api.host import Host
from pyinfra.context import ctx_host
from pyinfra.facts.files import LINUX_STAT_COMMAND, Directory, File, Link, Sha1File, Socket
from pyinfra.facts.server import Sysctl, Users
from pyinfra.facts.systemd import SYSTEMD_UNIT_NAME_REGEX, SystemdEnabled, SystemdStatus

# Rounds of the look-ahead: a no-op run needs 3 (e.g. File, then Sha1File, then what follows a match).
PREFETCH_ROUNDS = 4
# The batched command goes to `sh -c` as one argument, which Linux caps at 128 KiB.
BATCH_BYTES = 64 * 1024


class _Unknown(BaseException):
    """A fact the look-ahead has no value for yet (BaseException: no `except Exception` hides it)."""


class _HostFacts:
    def __init__(self) -> None:
        self.values: dict[tuple, Any] = {}
        self.fetching = 0  # > 0 while a fact's own command runs: it changes nothing
        self.prefetched = False
        self.collecting: dict[tuple, tuple] | None = None  # the look-ahead's wanted facts
        self.planning: dict[tuple, dict] | None = None  # facts the deploy file asked while planning
        self.ahead: dict[tuple, dict] | None = None  # facts the look-ahead asked (all rounds)
        self.executed: dict[tuple, dict] = {}  # facts operations asked while executing so far
        self.remembering = False  # the deploy file plans inside planning_reads_batched
        self._defaults: dict | None = None

    def connector_defaults(self, host: Host) -> dict:
        """The connector arguments a fact read outside any operation gets (host data, config)."""
        if self._defaults is None:
            self._defaults, _keys = pop_global_arguments(host.state, host, {})
        return self._defaults


_ORIGINAL: dict[str, Any] = {}
_LOOKING_AHEAD: set = set()  # greenlets generating commands only to learn which facts they need


def _facts(host: Host) -> _HostFacts:
    facts = host.__dict__.get("_kept_facts")
    if facts is None:
        facts = host.__dict__["_kept_facts"] = _HostFacts()
    return facts


def _request(host: Host, key: tuple, cls, args, kwargs,
             global_kwargs: dict | None = None) -> tuple[tuple, FactBase, dict, dict]:
    """(key, fact, its arguments, connector arguments) as pyinfra would run it.

    ``global_kwargs``: the global arguments in force, when the caller knows them and ``kwargs``
    holds none (pyinfra would look up each of about thirty again for every fact)."""
    fact = cls()
    if global_kwargs is None or any(name.startswith("_") for name in kwargs):
        fact_kwargs, global_kwargs = _handle_fact_kwargs(host.state, host, cls, args, kwargs)
    else:
        fact_kwargs = _call_arguments(cls, args, kwargs) if args or kwargs else {}
    fact_kwargs = {name: value for name, value in fact_kwargs.items() if name != "self"}
    executor = {name: value for name, value in global_kwargs.items() if name in CONNECTOR_ARGUMENT_KEYS}
    return key, fact, fact_kwargs, executor


# inspect.signature, built once per function: callers check arguments against it at every fact
# request and (roles.pyinfra_prepare) every operation call, and it never changes.
cached_signature = cache(signature)


def _call_arguments(cls, args, kwargs) -> dict:
    """What inspect.getcallargs(cls().command, ...) gives (defaults filled in), from the command's
    cached signature: getcallargs rebuilds it at every call."""
    bound = cached_signature(cls.command).bind(None, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _key(host: Host, cls, args, kwargs) -> tuple:
    """The fact, its arguments as given and the connector arguments in force (sudo, env, ...).

    Cheaper than pyinfra's own normalisation (which reads type hints on every call); the same fact
    asked in two spellings is only read twice.
    """
    current = host.current_op_global_arguments or {}
    defaults = _facts(host).connector_defaults(host)
    connector = [(name, current[name]) for name in CONNECTOR_ARGUMENT_KEYS
                 if name in current and current[name] != defaults.get(name)]
    return cls, repr(args), repr(sorted(kwargs.items())), repr(connector)


def get_fact(self: Host, name_or_cls, *args, **kwargs):
    if not (isinstance(name_or_cls, type) and issubclass(name_or_cls, FactBase)) or name_or_cls.shell_executable:
        return _ORIGINAL["get_fact"](self, name_or_cls, *args, **kwargs)
    key = _key(self, name_or_cls, args, kwargs)
    facts = _facts(self)
    if facts.planning is not None and not self.state.is_executing and not self.in_op:
        _note_read(facts.planning, key, name_or_cls, args, kwargs)
    looking_ahead = facts.collecting is not None and gevent.getcurrent() in _LOOKING_AHEAD
    if looking_ahead and facts.ahead is not None:
        _note_read(facts.ahead, key, name_or_cls, args, kwargs)
    elif facts.remembering and self.state.is_executing:
        _note_read(facts.executed, key, name_or_cls, args, kwargs)
    if key not in facts.values:
        if looking_ahead:
            facts.collecting[key] = _request(self, key, name_or_cls, args, kwargs)
            for companion, companion_kwargs in _companions(name_or_cls, args, kwargs):
                _collect(self, companion, (), companion_kwargs)
            raise _Unknown
        if self.state.is_executing and not facts.prefetched:
            facts.prefetched = True
            _prefetch(self)
    if key in facts.values:
        return _copy(facts.values[key])
    facts.fetching += 1
    try:
        value = _ORIGINAL["get_fact"](self, name_or_cls, *args, **kwargs)
    finally:
        facts.fetching -= 1
    facts.values[key] = _copy(value)
    return value


def planning_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "homelab-ops" / "planning-facts"


def _planning_file(host: Host) -> Path:
    """Where the facts this host's planning asked last time are listed: per host (name and
    address), deploy file and role selection."""
    identity = "\0".join(str(part) for part in (host.name, host.data.get("ssh_hostname"),
                                                 host.state.current_deploy_filename, host.data.get("only_roles")))
    return planning_cache_dir() / f"{hashlib.sha1(identity.encode()).hexdigest()}.json"


def _ahead_file(host: Host) -> Path:
    """Where the facts this host's operations asked while executing last time are listed."""
    return _planning_file(host).with_suffix(".ahead.json")


def _note_read(listing: dict[tuple, dict], key: tuple, cls, args, kwargs) -> None:
    if key in listing or key[3] != "[]":  # a read with connector arguments (sudo...): left alone
        return
    entry = {"fact": f"{cls.__module__}:{cls.__qualname__}", "args": list(args), "kwargs": kwargs}
    try:
        # Only what reads back as the same request (the key is its repr).
        if json.loads(json.dumps(entry)) != entry or any(isinstance(a, tuple) for a in (*args, *kwargs.values())):
            return
    except (TypeError, ValueError):
        return
    listing[key] = entry


def _remembered(path: Path) -> list:
    try:
        remembered = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return remembered if isinstance(remembered, list) else []


def _remember(path: Path, listing: dict[tuple, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged = path.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(json.dumps(list(listing.values())))
    staged.replace(path)


@contextmanager
def planning_reads_batched():
    """Around the deploy file's planning of the current host: the facts its planning and then its
    operations asked on the previous run (remembered per host on the control machine: fact names
    and arguments, never values) are read first, in one batch; each value is the node's answer now,
    kept until anything changes the node, as every kept fact is. A fact not listed is read as usual
    (by the look-ahead's batches for operations), and the lists are replaced by what this run asked.
    Without this, planning read each fact in a round trip of its own, one after another (about 8 per
    node: release, packages, current sysctls, ...), and the operations' facts took two more batches
    (those that depend on the first's answers) once executing began."""
    host = ctx_host.get()
    facts = _facts(host)
    listing = _planning_file(host)
    wanted: dict[tuple, tuple] = {}
    # In force for every remembered read when planning starts outside any operation and @deploy.
    at_top = host.current_op_global_arguments is None and host.current_deploy_kwargs is None
    global_kwargs = facts.connector_defaults(host) if at_top else None
    for entry in _remembered(listing) + _remembered(_ahead_file(host)):
        try:
            module, _, name = entry["fact"].partition(":")
            cls = getattr(import_module(module), name)
            args, kwargs = tuple(entry["args"]), dict(entry["kwargs"])
            key = _key(host, cls, args, kwargs)
            if key not in facts.values and key not in wanted:
                wanted[key] = _request(host, key, cls, args, kwargs, global_kwargs)
        except Exception:  # a fact that no longer exists or takes other arguments: not read ahead
            continue
    if wanted:
        _read_batch(host, wanted)
    facts.planning = {}
    facts.remembering = True
    yield
    _remember(listing, facts.planning)
    facts.planning = None


def want(cls, *args, **kwargs) -> None:
    """In an operation: it will also ask for ``cls(*args, **kwargs)`` (spelled the same), after facts
    the look-ahead does not know yet; read with them in one round trip instead of one more."""
    host = ctx_host.get()
    if host is not None and _facts(host).collecting is not None and gevent.getcurrent() in _LOOKING_AHEAD:
        _collect(host, cls, args, kwargs)


def _collect(host: Host, cls, args, kwargs) -> None:
    key = _key(host, cls, args, kwargs)
    facts = _facts(host)
    if facts.ahead is not None:
        _note_read(facts.ahead, key, cls, args, kwargs)
    if key not in facts.values and key not in facts.collecting:
        facts.collecting[key] = _request(host, key, cls, args, kwargs)


def _companions(cls, args, kwargs) -> list[tuple[type, dict]]:
    """What pyinfra's operations ask next after ``cls``, known as soon as it is asked: a file's
    metadata after its hash (files.put, files.file), a unit's enabled state after its running
    state (systemd.service). Read with it, they cost no round of their own (merged commands)."""
    if args:
        return []
    if cls is Sha1File and set(kwargs) == {"path"}:
        return [(File, kwargs)]
    if cls is SystemdStatus:
        return [(SystemdEnabled, kwargs)]
    return []


def _copy(value):
    """A kept value as the caller may change it (operations do edit fact dicts).

    Through pickle, which copies plain data (dicts, lists, strings: what facts hold) three to five
    times faster than deepcopy: a no-op run copies about a hundred package lists per node."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # something pickle cannot take (a lock, a lambda): copied the slow way
        return copy.deepcopy(value)


def _changes_node(name: str):
    original = _ORIGINAL[name]

    def sent(self: Host, *args, **kwargs):
        facts = _facts(self)
        if not facts.fetching:
            facts.values.clear()
        return original(self, *args, **kwargs)

    return sent


class _QuietLookAhead(logging.Filter):
    """The look-ahead's generated commands are thrown away: so are its log lines (noops, diffs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return gevent.getcurrent() not in _LOOKING_AHEAD


def _prefetch(host: Host) -> None:
    state = host.state
    pending = [state.ops[host][op_hash] for op_hash in state.get_op_order()
               if op_hash in state.ops[host] and not state.ops[host][op_hash].operation_meta.is_complete()]
    facts = _facts(host)
    # Only a deploy whose planning remembers its reads (planning_reads_batched) remembers these too:
    # what the operations executed so far asked and what the look-ahead asks for the others. A run
    # whose operations find every fact kept never looks ahead, and leaves the list as it was.
    facts.ahead = dict(facts.executed) if facts.remembering else None
    try:
        _look_ahead(host, pending)
    finally:
        if facts.ahead is not None:
            _remember(_ahead_file(host), facts.ahead)
        facts.ahead = None


def executed_reads_remembered(host: Host) -> None:
    """After all of ``host``'s operations ran: when they found every fact kept (no look-ahead ran),
    what they asked becomes the list the next run reads ahead. Otherwise the list a changing run
    left (the date for apt's lists, a temporary folder for uploads, staged files) was read again at
    every later no-op."""
    facts = _facts(host)
    if facts.remembering and not facts.prefetched:
        _remember(_ahead_file(host), facts.executed)


def _look_ahead(host: Host, pending: list) -> None:
    facts = _facts(host)
    saved = (host.in_op, host.current_op_hash, host.current_op_global_arguments, host.current_op_deploy_data)
    for _ in range(PREFETCH_ROUNDS):
        wanted: dict[tuple, tuple] = {}
        facts.collecting = wanted
        _LOOKING_AHEAD.add(gevent.getcurrent())
        waiting = []  # operations that asked for a fact not known yet: generated again next round
        try:
            for op_data in pending:
                try:
                    for _command in op_data.command_generator():
                        pass
                except _Unknown:
                    waiting.append(op_data)
                except Exception:  # the real run meets it again and reports it
                    pass
        finally:
            _LOOKING_AHEAD.discard(gevent.getcurrent())
            facts.collecting = None
            host.in_op, host.current_op_hash, host.current_op_global_arguments, host.current_op_deploy_data = saved
        if not wanted or not _read_batch(host, wanted):
            return
        pending = waiting


@dataclass
class _Read:
    """One command of a batch answering ``requests``; ``split`` gives each request's output lines
    from the command's (absent: that fact is read the ordinary way)."""

    requests: list
    command: str
    split: Callable[[list[str], int], dict[tuple, list[str]]]


def _read_batch(host: Host, wanted: dict[tuple, tuple]) -> bool:
    """Read ``wanted`` facts in as few commands as fit; False if a batch itself failed."""
    groups: dict[str, list] = {}
    for request in wanted.values():
        groups.setdefault(repr(sorted(request[3].items())), []).append(request)
    for requests in groups.values():
        chunk: list[_Read] = []
        size = 0
        for read in _reads(host, requests):
            chunk.append(read)
            size += len(read.command)
            if size > BATCH_BYTES:
                if not _read_chunk(host, chunk):
                    return False
                chunk, size = [], 0
        if chunk and not _read_chunk(host, chunk):
            return False
    return True


def _reads(host: Host, requests: list) -> list[_Read]:
    """The commands answering ``requests``: the hashes of all files in one sha1sum, the metadata of
    all paths in one stat, the states of all units in one systemctl, the values of all sysctls in
    one sysctl (each fact's own command forks its program once per file, unit or key: most of a
    converged node's time); any other fact by its own command. A merged command that fails leaves
    its facts to be read the ordinary way."""
    hashed, stated, units, sysctls, single = [], [], [], [], []
    for request in requests:
        _key, fact, fact_kwargs, _executor = request
        kind = type(fact)
        if kind is Sha1File and _plain_path(fact_kwargs):
            hashed.append(request)
        elif kind is Sysctl and _plain_sysctls(fact_kwargs):
            sysctls.append(request)
        elif kind in (File, Directory, Link, Socket) and _plain_path(fact_kwargs):
            stated.append(request)
        elif kind in (SystemdStatus, SystemdEnabled) and _plain_units(fact_kwargs):
            units.append(request)
        else:
            single.append(request)
    reads = []
    if hashed:
        reads.append(_hashes_read(hashed))
    if stated:
        reads.append(_stat_read(stated))
    if units:
        reads.append(_units_read(units))
    if sysctls:
        reads.append(_sysctls_read(sysctls))
    for request in single:
        command = _fact_command(host, request)
        if command is not None:
            reads.append(_Read([request], command, lambda lines, code, key=request[0]: {key: lines} if code == 0 else {}))
    return reads


def _plain_path(fact_kwargs: dict) -> bool:
    """A path sha1sum and stat print as given (no escaping, no ~ to expand), one line each."""
    path = fact_kwargs.get("path")
    return (set(fact_kwargs) == {"path"} and isinstance(path, str) and path.startswith("/")
            and not any(char in path for char in "\\\n\r"))


def _plain_units(fact_kwargs: dict) -> bool:
    services = fact_kwargs.get("services")
    if isinstance(services, str):
        services = [services]
    return (fact_kwargs.get("user_mode") is False and fact_kwargs.get("machine") is None
            and fact_kwargs.get("user_name") is None and isinstance(services, (list, tuple)) and bool(services)
            and all(isinstance(unit, str) and re.fullmatch(SYSTEMD_UNIT_NAME_REGEX, unit) for unit in services))


def _plain_sysctls(fact_kwargs: dict) -> bool:
    keys = fact_kwargs.get("keys")
    return (set(fact_kwargs) == {"keys"} and isinstance(keys, (list, tuple)) and bool(keys)
            and all(isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", key) for key in keys))


def _sysctls_read(requests: list) -> _Read:
    # server.sysctl asks for one key at a time (a sysctl process each); one sysctl prints them all,
    # "key = value" per line, each line given to the request for its key.
    keys = list(dict.fromkeys(key for request in requests for key in request[2]["keys"]))
    command = f"sysctl {' '.join(keys)} 2>/dev/null || true"

    def split(lines: list[str], code: int) -> dict[tuple, list[str]]:
        if code != 0:
            return {}
        by_key = {line.split("=", 1)[0].strip(): line for line in lines if "=" in line}
        return {request[0]: [by_key[key] for key in request[2]["keys"] if key in by_key] for request in requests}

    return _Read(requests, command, split)


def _paths_of(requests: list) -> list[str]:
    return list(dict.fromkeys(request[2]["path"] for request in requests))


def _hashes_read(requests: list) -> _Read:
    # sha1sum prints "<hash>  <path>" per file it could read, which is what Sha1File parses (its
    # command prints nothing for a missing file, as here).
    paths = _paths_of(requests)
    command = (f"command -v sha1sum >/dev/null 2>&1 && {{ sha1sum -- {' '.join(map(shlex.quote, paths))} "
               "2>/dev/null; true; }")

    def split(lines: list[str], code: int) -> dict[tuple, list[str]]:
        if code != 0:
            return {}
        found = {line[42:]: line for line in lines if len(line) > 42 and line[40:42] == "  "}
        for request in requests:
            request[1].path = request[2]["path"]  # Sha1File.process matches it (its command sets it)
        return {request[0]: [found[request[2]["path"]]] if request[2]["path"] in found else [] for request in requests}

    return _Read(requests, command, split)


# pyinfra's own stat format for File and its kinds (Directory, Link, Socket), each line prefixed
# with the path it is about.
STAT_FORMAT = shlex.split(LINUX_STAT_COMMAND)[2]


def _stat_read(requests: list) -> _Read:
    paths = _paths_of(requests)
    marker = f" {secrets.token_hex(6)} "
    command = (f"command -v stat >/dev/null 2>&1 && {{ stat -c {shlex.quote('%n' + marker + STAT_FORMAT)} -- "
               f"{' '.join(map(shlex.quote, paths))} 2>/dev/null; true; }}")

    def split(lines: list[str], code: int) -> dict[tuple, list[str]]:
        if code != 0:
            return {}
        found = dict(line.split(marker, 1) for line in lines if marker in line)
        return {request[0]: [found[request[2]["path"]]] if request[2]["path"] in found else [] for request in requests}

    return _Read(requests, command, split)


def _units_of(request) -> list[str]:
    services = request[2]["services"]
    return [services] if isinstance(services, str) else list(services)


def _units_read(requests: list) -> _Read:
    # systemctl show prints one block per unit asked, in that order, separated by blank lines;
    # each fact reads only the Id and its own property from a block.
    units = list(dict.fromkeys(unit for request in requests for unit in _units_of(request)))
    properties = " ".join(f"--property {name}" for name in
                          dict.fromkeys(["Id", SystemdStatus.state_key, SystemdEnabled.state_key]))
    command = f"command -v systemctl >/dev/null 2>&1 && systemctl show --all {properties} {' '.join(units)}"

    def split(lines: list[str], code: int) -> dict[tuple, list[str]]:
        blocks: list[list[str]] = [[]]
        for line in lines:
            if line.strip():
                blocks[-1].append(line)
            elif blocks[-1]:
                blocks.append([])
        blocks = [block for block in blocks if block]
        if code != 0 or len(blocks) != len(units):
            return {}
        by_unit = dict(zip(units, blocks))
        answers = {}
        for request in requests:
            answer: list[str] = []
            for unit in _units_of(request):
                answer += ([""] if answer else []) + by_unit[unit]
            answers[request[0]] = answer
        return answers

    return _Read(requests, command, split)


def _fact_command(host: Host, request) -> str | None:
    _key, fact, fact_kwargs, _executor = request
    if fact.check_preconditions(host.state, host):
        return None
    command = _make_command(fact.command, dict(fact_kwargs))
    requires = _make_command(fact.requires_command, dict(fact_kwargs))
    if requires:
        # As pyinfra does: a missing program is told apart from empty output (and read the ordinary way).
        command = StringCommand("command", "-v", requires, ">/dev/null", "2>&1", "&&", "(", command, ")")
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    return str(command)


def _read_chunk(host: Host, chunk: list[_Read]) -> bool:
    token = secrets.token_hex(8)
    script = "".join(f"echo {token}-begin; ( {read.command}\n); echo {token}-end $?\n" for read in chunk)
    facts = _facts(host)
    executor = chunk[0].requests[0][3]
    facts.fetching += 1
    try:
        status, output = host.run_shell_command(StringCommand(script), print_output=host.state.print_fact_output,
                                                print_input=host.state.print_fact_input, **executor)
    except Exception:
        return False
    finally:
        facts.fetching -= 1
    if not status:
        return False
    ended = re.compile(rf"^(.*){token}-end (\d+)$")
    results: list[tuple[list[str], int]] = []
    lines: list[str] | None = None
    for line in output.stdout_lines:
        if line == f"{token}-begin":
            lines = []
            continue
        match = ended.match(line)
        if match and lines is not None:
            if match.group(1):  # the fact's last line had no newline
                lines.append(match.group(1))
            results.append((lines, int(match.group(2))))
            lines = None
        elif lines is not None:
            lines.append(line)
    if len(results) != len(chunk):
        return False
    if host.state.print_fact_info:
        logger.info(f"{host.print_prefix}Loaded {sum(len(read.requests) for read in chunk)} facts in one batch")
    for read, (lines, code) in zip(chunk, results):
        try:
            answers = read.split(lines, code)
        except Exception:
            continue
        for key, fact, _fact_kwargs, _executor in read.requests:
            if key not in answers:
                continue  # read the ordinary way, where pyinfra reports the failure
            try:
                facts.values[key] = fact.process(answers[key]) if answers[key] else fact.default()
            except Exception:
                continue
    return True


# pyinfra's Users fact forks about fifteen processes per account (grep, cut, lastlog, id, subshells):
# a second of a node's time on a loaded machine, most of a converged node's first batch. This
# command prints the same lines (a test compares the two) with one pass over passwd, shadow and
# lastlog's listing, keeping one `id -Gn` per account, which asks the system's groups: its first
# name is the primary group, which `id -gn` prints.
USERS_COMMAND = r"""
SEP=`printf '\001'`
((lastlog || lastlogin) 2> /dev/null) | tr -s ' ' | awk -F: -v sep="$SEP" '
    FILENAME == "-" { split($0, field, " "); if (!(field[1] in last)) last[field[1]] = $0; next }
    FILENAME == "/etc/shadow" { if (!($1 in password)) password[$1] = $2; next }
    $1 != "" { print $0 sep last[$1] sep password[$1] }
' - /etc/shadow /etc/passwd | while IFS= read -r line; do
    ENTRY=${line%%"$SEP"*}; rest=${line#*"$SEP"}; LASTLOG=${rest%%"$SEP"*}; PASSWORD=${rest#*"$SEP"}
    i=${ENTRY%%:*}
    GROUPS_OF=`id -Gn $i`
    echo "$ENTRY|${GROUPS_OF%% *}|$GROUPS_OF|$LASTLOG|$PASSWORD";
done
""".strip()


def _users_command(_fact) -> str:
    return USERS_COMMAND


def install() -> None:
    """Route pyinfra's Host fact reads and node commands through the kept values (once per process)."""
    if Host.get_fact is get_fact:
        return
    _ORIGINAL["users_command"] = Users.command
    Users.command = _users_command
    for name in ("get_fact", "run_shell_command", "put_file", "get_file"):
        _ORIGINAL[name] = getattr(Host, name)
    Host.get_fact = get_fact
    for name in ("run_shell_command", "put_file", "get_file"):
        setattr(Host, name, _changes_node(name))
    pyinfra_logger = logging.getLogger("pyinfra")
    if not any(isinstance(existing, _QuietLookAhead) for existing in pyinfra_logger.filters):
        pyinfra_logger.addFilter(_QuietLookAhead())
