"""Connection commands: PING, ECHO, SELECT, QUIT, AUTH, HELLO, RESET and CLIENT."""

from __future__ import annotations

import re

from .. import errors
from ..protocol import (
    OK,
    ReplyError,
    Status,
    Verbatim,
    bulk,
    parse_int,
)
from .base import (
    bulk_or_null,
    command,
    to_int,
    unknown_subcommand,
)


@command("ping", -1, "fast", group="connection", summary="Returns the server's liveliness response.")
def cmd_ping(conn, argv):
    if len(argv) > 2:
        raise ReplyError(errors.wrong_arity("ping"), "wrong_arity")
    if len(argv) == 2:
        return bulk(argv[1])
    return b"+PONG\r\n"


@command("echo", 2, "fast", group="connection", summary="Returns the given string.")
def cmd_echo(conn, argv):
    return bulk(argv[1])


@command("select", 2, "loading stale fast", group="connection", summary="Changes the selected database.")
def cmd_select(conn, argv):
    index = to_int(argv[1])
    if index != 0:
        raise ReplyError(errors.DB_INDEX_OUT_OF_RANGE)
    return OK


@command("quit", -1, "no_auth fast", group="connection", summary="Closes the connection.")
def cmd_quit(conn, argv):
    conn.close_after_reply = True
    return OK


@command("auth", -2, "no_auth fast", group="connection", summary="Authenticates the connection.")
def cmd_auth(conn, argv):
    if len(argv) > 3:
        raise ReplyError(errors.SYNTAX)
    server = conn.server
    if len(argv) == 2 and not server.requirepass:
        raise ReplyError(errors.AUTH_WITHOUT_PASSWORD)
    username = argv[1] if len(argv) == 3 else b"default"
    password = argv[-1]
    if not server.check_password(username, password):
        raise ReplyError(errors.WRONGPASS, "auth")
    conn.authenticated = True
    return OK


@command("hello", -1, "no_auth fast", group="connection", summary="Handshakes with the server.")
def cmd_hello(conn, argv):
    server = conn.server
    version = None
    if len(argv) >= 2:
        version = parse_int(argv[1])
        if version is None:
            raise ReplyError(errors.PROTOCOL_VERSION_NOT_INTEGER)
        if version < 2 or version > 3:
            raise ReplyError(errors.NOPROTO, "noproto")
    name = None
    authenticated = conn.authenticated
    i = 2
    while i < len(argv):
        option = argv[i].lower()
        more = len(argv) - i - 1
        if option == b"auth" and more >= 2:
            if not server.check_password(argv[i + 1], argv[i + 2]):
                raise ReplyError(errors.WRONGPASS, "auth")
            authenticated = True
            i += 3
        elif option == b"setname" and more >= 1:
            name = argv[i + 1]
            check_client_name(name)
            i += 2
        else:
            raise ReplyError(errors.hello_option(argv[i]))
    if not authenticated:
        raise ReplyError(errors.HELLO_NOAUTH, "noauth")
    conn.authenticated = True
    if name is not None:
        conn.name = name
    if version is not None:
        conn.resp3 = version == 3
    return {
        "server": "redis",
        "version": server.redis_version,
        "proto": 3 if conn.resp3 else 2,
        "id": conn.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


@command("reset", 1, "no_auth fast", group="connection", summary="Resets the connection.")
def cmd_reset(conn, argv):
    conn.resp3 = False
    conn.name = b""
    conn.authenticated = not conn.server.requirepass
    return b"+RESET\r\n"


_BAD_NAME = re.compile(rb"[^!-~]")


def check_client_name(name: bytes) -> None:
    if _BAD_NAME.search(name):
        raise ReplyError(errors.BAD_CLIENT_NAME)


@command("client", -2, "", group="connection", summary="A container for client connection commands.")
def cmd_client(conn, argv):
    sub = argv[1].lower()
    n = len(argv)
    conn.last_command = "client|" + sub.decode(errors="replace")
    if sub == b"kill":
        return client_kill(conn, argv)
    if sub == b"id" and n == 2:
        return conn.id
    if sub == b"getname" and n == 2:
        return bulk_or_null(conn, conn.name or None)
    if sub == b"setname" and n == 3:
        check_client_name(argv[2])
        conn.name = argv[2]
        return OK
    if sub == b"info" and n == 2:
        return Verbatim(conn.describe().encode() + b"\n")
    if sub == b"list":
        if n == 2:
            return Verbatim(b"".join(c.describe().encode() + b"\n" for c in conn.server.clients.values()))
        if n >= 4 and argv[2].lower() == b"type":
            kind = argv[3].lower()
            if kind not in (b"normal", b"master", b"replica", b"pubsub"):
                raise ReplyError(errors.unknown_client_type(argv[3]))
            if kind != b"normal":
                return Verbatim(b"")
            return Verbatim(b"".join(c.describe().encode() + b"\n" for c in conn.server.clients.values()))
        if n >= 4 and argv[2].lower() == b"id":
            wanted = set()
            for raw in argv[3:]:
                value = parse_int(raw)
                if value is None or value <= 0:
                    raise ReplyError(errors.INVALID_CLIENT_ID)
                wanted.add(value)
            return Verbatim(b"".join(
                c.describe().encode() + b"\n" for c in conn.server.clients.values() if c.id in wanted
            ))
        raise ReplyError(errors.SYNTAX)
    if sub == b"help":
        return [
            Status(line)
            for line in (
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST [TYPE <normal|master|replica|pubsub>]",
                "LIST [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "HELP",
                "    Print this help.",
            )
        ]
    if sub in (b"id", b"getname", b"setname", b"info"):
        raise ReplyError(errors.wrong_arity(f"client|{sub.decode()}"), "wrong_arity")
    raise unknown_subcommand(argv)


CLIENT_TYPES = (b"normal", b"master", b"slave", b"replica", b"pubsub")


def client_kill(conn, argv):
    """CLIENT KILL addr (old form: +OK or an error) or CLIENT KILL <filter> <value> ... (a count)."""
    if len(argv) == 2:
        raise ReplyError(errors.wrong_arity("client|kill"), "wrong_arity")
    if len(argv) == 3:
        wanted, skipme = {"addr": argv[2].decode(errors="replace")}, False
    elif len(argv) > 3 and len(argv) % 2 == 0:
        wanted, skipme = client_kill_filters(argv[2:])
    else:
        raise ReplyError(errors.SYNTAX)
    killed = 0
    for client in list(conn.server.clients.values()):
        if (client is conn and skipme) or any(getattr(client, name) != value for name, value in wanted.items()):
            continue
        killed += 1
        if client is conn:
            conn.close_after_reply = True
        else:
            client.kill()
    if len(argv) == 3:
        if not killed:
            raise ReplyError(errors.NO_SUCH_CLIENT)
        return OK
    return killed


def client_kill_filters(pairs) -> tuple[dict, bool]:
    """Redis 7.0's CLIENT KILL filters as {Connection attribute: value}, and SKIPME."""
    wanted, skipme = {}, True
    for option, value in zip(pairs[::2], pairs[1::2]):
        option = option.lower()
        if option == b"id":
            number = parse_int(value)
            if number is None or number < 1:
                raise ReplyError(errors.CLIENT_ID_NOT_POSITIVE)
            wanted["id"] = number
        elif option == b"type":
            if value.lower() not in CLIENT_TYPES:
                raise ReplyError(errors.unknown_client_type(value))
            if value.lower() != b"normal":
                wanted["id"] = 0  # every toy-redis client is a normal one: none matches
        elif option in (b"addr", b"laddr"):
            wanted[option.decode()] = value.decode(errors="replace")
        elif option == b"user":
            if value != b"default":
                raise ReplyError(errors.no_such_user(value))
        elif option == b"skipme" and value.lower() in (b"yes", b"no"):
            skipme = value.lower() == b"yes"
        else:
            raise ReplyError(errors.SYNTAX)
    return wanted, skipme
