"""Server and introspection commands: TIME, INFO, CONFIG, COMMAND, SLOWLOG, BGREWRITEAOF, SHUTDOWN, and
toy-redis's own TRACEMALLOC (where the server's memory goes, for `homelab profile --memory`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pprof_sampler.allocations import MAX_SECONDS, MAX_SITES

from .. import errors, info, runtime_config
from ..protocol import (
    OK,
    ReplyError,
    SetReply,
    Status,
    Verbatim,
    parse_int,
)
from .base import (
    COMMANDS,
    Command,
    command,
    to_int,
    unknown_subcommand,
)


@command("time", 1, "fast", group="server", summary="Returns the server time.")
def cmd_time(conn, argv):
    now = time.time_ns() // 1000
    return [b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)]


@command("info", -1, "", group="server", summary="Returns information and statistics about the server.")
def cmd_info(conn, argv):
    sections = [a.decode(errors="replace").lower() for a in argv[1:]]
    return Verbatim(info.render(conn.server, sections).encode())


@command("config", -2, "", group="server", summary="A container for server configuration commands.")
def cmd_config(conn, argv):
    sub = argv[1].lower()
    conn.last_command = "config|" + sub.decode(errors="replace")
    server = conn.server
    if sub == b"get":
        if len(argv) < 3:
            raise ReplyError(errors.wrong_arity("config|get"), "wrong_arity")
        return runtime_config.get(server, argv[2:])
    if sub == b"set":
        if len(argv) < 4 or len(argv) % 2:
            raise ReplyError(errors.wrong_arity("config|set"), "wrong_arity")
        runtime_config.set_values(server, argv[2:])
        return OK
    if sub == b"resetstat":
        if len(argv) != 2:
            raise ReplyError(errors.wrong_arity("config|resetstat"), "wrong_arity")
        server.reset_stats()
        return OK
    if sub == b"help":
        return [Status(line) for line in (
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "HELP",
            "    Print this help.",
        )]
    raise unknown_subcommand(argv)


@command("command", -1, "loading stale", group="server", summary="Returns detailed information about all commands.")
def cmd_command(conn, argv):
    if len(argv) == 1:
        return [command_info(c) for c in COMMANDS.values()]
    sub = argv[1].lower()
    if sub == b"count" and len(argv) == 2:
        return len(COMMANDS)
    if sub == b"info":
        return [command_info(COMMANDS[n.lower()]) if n.lower() in COMMANDS else None for n in argv[2:]]
    if sub == b"docs":
        wanted = [n.lower() for n in argv[2:]] or list(COMMANDS)
        return {c.name: command_docs(c) for n in wanted if (c := COMMANDS.get(n)) is not None}
    if sub == b"list" and len(argv) == 2:
        return [c.name for c in COMMANDS.values()]
    if sub == b"getkeys" and len(argv) >= 3:
        cmd = COMMANDS.get(argv[2].lower())
        if cmd is None:
            raise ReplyError(errors.INVALID_COMMAND)
        if (cmd.arity > 0 and len(argv) - 2 != cmd.arity) or len(argv) - 2 < -cmd.arity:
            raise ReplyError(errors.INVALID_ARGUMENT_COUNT)
        keys = cmd.keys(argv[2:])
        if not keys:
            raise ReplyError(errors.NO_KEY_ARGUMENTS)
        return keys
    if sub == b"help":
        return [Status("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
                Status("COUNT"), Status("    Return the total number of commands in this Redis server."),
                Status("DOCS [<command-name> ...]"), Status("    Return documentation details about multiple Redis commands."),
                Status("INFO [<command-name> ...]"), Status("    Return details about multiple Redis commands."),
                Status("LIST"), Status("    Return a list of all commands in this Redis server."),
                Status("HELP"), Status("    Print this help.")]
    if sub in (b"count", b"list"):
        raise ReplyError(errors.wrong_arity(f"command|{sub.decode()}"), "wrong_arity")
    raise unknown_subcommand(argv)


# Flags as COMMAND INFO reports them.
_FLAG_NAMES = {"write": "write", "readonly": "readonly", "denyoom": "denyoom", "fast": "fast",
               "no_auth": "no_auth", "loading": "loading", "stale": "stale"}


def command_info(cmd: Command) -> list:
    flags = {Status(_FLAG_NAMES[f]) for f in cmd.flags if f in _FLAG_NAMES}
    categories = [Status("@" + cmd.group)]
    if "write" in cmd.flags:
        categories.append(Status("@write"))
    if "readonly" in cmd.flags:
        categories.append(Status("@read"))
    if "fast" in cmd.flags:
        categories.append(Status("@fast"))
    return [cmd.name, cmd.arity, flags, cmd.first_key, cmd.last_key, cmd.step, categories, [], [], []]


def _reply_value(raw):
    """command_docs.json's encoding of RESP3 types back into reply values."""
    if isinstance(raw, dict):
        if raw.keys() == {"~"}:
            return SetReply(_reply_value(item) for item in raw["~"])
        if raw.keys() == {"+"}:
            return Status(raw["+"])
        return {key: _reply_value(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_reply_value(item) for item in raw]
    return raw


# Redis 7.0.15's COMMAND DOCS for these commands (see tests/toy_redis/test_command_docs.py).
DOCS = _reply_value(json.loads((Path(__file__).parent.parent / "command_docs.json").read_text()))


def command_docs(cmd: Command) -> dict:
    """Redis's docs; for a command Redis does not have (TRACEMALLOC), its summary and group."""
    return DOCS.get(cmd.name) or {"summary": cmd.summary, "since": "0.1.0", "group": cmd.group}


@command("slowlog", -2, "", group="server", summary="A container for slow log commands.")
def cmd_slowlog(conn, argv):
    sub = argv[1].lower()
    conn.last_command = "slowlog|" + sub.decode(errors="replace")
    slowlog = conn.server.slowlog
    if sub == b"len" and len(argv) == 2:
        return len(slowlog)
    if sub == b"reset" and len(argv) == 2:
        slowlog.clear()
        return OK
    if sub == b"get" and len(argv) <= 3:
        count = 10
        if len(argv) == 3:
            count = parse_int(argv[2])
            if count is None or count < -1:
                raise ReplyError(errors.SLOWLOG_COUNT)
            if count == -1:
                count = len(slowlog)
        return [list(entry) for entry in list(slowlog)[:count]]
    if sub == b"help":
        return [Status("SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
                Status("GET [<count>]"), Status("    Return top <count> entries from the slowlog (default: 10, -1 mean all)."),
                Status("LEN"), Status("    Return the length of the slowlog."),
                Status("RESET"), Status("    Reset the slowlog."),
                Status("HELP"), Status("    Print this help.")]
    if sub in (b"len", b"reset", b"get"):
        raise ReplyError(errors.wrong_arity(f"slowlog|{sub.decode()}"), "wrong_arity")
    raise unknown_subcommand(argv)


@command("bgrewriteaof", 1, "", group="server", summary="Asynchronously rewrites the append-only file to disk.")
def cmd_bgrewriteaof(conn, argv):
    aof = conn.server.aof
    if aof is None:
        raise ReplyError(errors.AOF_OFF)
    if aof.rewrite_pid is not None:
        raise ReplyError(errors.AOF_REWRITE_RUNNING)
    aof.start_rewrite(conn.db)
    return b"+Background append only file rewriting started\r\n"


@command("shutdown", -1, "loading stale", group="server", summary="Synchronously saves the database(s) to disk and shuts down the Redis server.")
def cmd_shutdown(conn, argv):
    for raw in argv[1:]:
        if raw.lower() not in (b"nosave", b"save", b"now", b"force", b"abort"):
            raise ReplyError(errors.SYNTAX)
    if any(raw.lower() == b"abort" for raw in argv[1:]):
        raise ReplyError(errors.NO_SHUTDOWN)
    conn.server.request_shutdown("shutdown_command")
    conn.close_after_reply = True
    # Redis sends no reply to a successful SHUTDOWN: the connection just closes.
    return b""


@command("tracemalloc", -2, "admin noscript loading stale", group="server",
         summary="toy-redis only: START <seconds> | REPORT <count> | STOP allocation tracing (tracemalloc).")
def cmd_tracemalloc(conn, argv):
    """START turns tracing on for at most <seconds>; REPORT lists allocating lines as
    [file, line, bytes held, bytes grown, blocks grown] (those that grew most, then those holding
    most, since START); STOP turns it off. Like every command, it needs AUTH when a password is set."""
    sub = argv[1].lower()
    conn.last_command = "tracemalloc|" + sub.decode(errors="replace")
    tracing = conn.server.allocations
    if sub == b"start" and len(argv) == 3:
        seconds = to_int(argv[2])
        if not 1 <= seconds <= MAX_SECONDS:
            raise ReplyError(f"ERR seconds must be between 1 and {MAX_SECONDS}")
        tracing.start(seconds)
        return OK
    if sub == b"report" and len(argv) == 3:
        count = to_int(argv[2])
        if not 1 <= count <= MAX_SITES:
            raise ReplyError(f"ERR count must be between 1 and {MAX_SITES}")
        if not tracing.running:
            raise ReplyError("ERR allocation tracing is off (TRACEMALLOC START <seconds> first)")
        return [[site.file.encode(), site.line, site.size, site.growth, site.count_growth]
                for site in tracing.report(count)]
    if sub == b"stop" and len(argv) == 2:
        tracing.stop()
        return OK
    raise unknown_subcommand(argv)
