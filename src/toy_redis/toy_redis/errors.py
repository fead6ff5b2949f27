"""Redis 7.0's error replies, word for word (clients and the tests against redis-server match
on them), kept in one place as fakeredis keeps its messages."""

from __future__ import annotations

SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
DB_INDEX_OUT_OF_RANGE = "ERR DB index is out of range"
NO_SUCH_KEY = "ERR no such key"
SAME_OBJECT = "ERR source and destination objects are the same"
INVALID_CURSOR = "ERR invalid cursor"
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
OFFSET_OUT_OF_RANGE = "ERR offset is out of range"
INCR_OVERFLOW = "ERR increment or decrement would overflow"
DECR_OVERFLOW = "ERR decrement would overflow"
NAN_OR_INFINITY = "ERR increment would produce NaN or Infinity"
NX_WITH_XX_GT_LT = "ERR NX and XX, GT or LT options at the same time are not compatible"
GT_WITH_LT = "ERR GT and LT options at the same time are not compatible"

NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
AUTH_WITHOUT_PASSWORD = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
HELLO_NOAUTH = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
    "AUTH <user> <pass> option can be used to authenticate the client and select "
    "the RESP protocol version at the same time"
)
PROTOCOL_VERSION_NOT_INTEGER = "ERR Protocol version is not an integer or out of range"
NOPROTO = "NOPROTO unsupported protocol version"
MAX_CLIENTS = "ERR max number of clients reached"
OOM = "OOM command not allowed when used memory > 'maxmemory'."

BAD_CLIENT_NAME = "ERR Client names cannot contain spaces, newlines or special characters."
INVALID_CLIENT_ID = "ERR Invalid client ID"
NO_SUCH_CLIENT = "ERR No such client"
CLIENT_ID_NOT_POSITIVE = "ERR client-id should be greater than 0"

INVALID_COMMAND = "ERR Invalid command specified"
INVALID_ARGUMENT_COUNT = "ERR Invalid number of arguments specified for command"
NO_KEY_ARGUMENTS = "ERR The command has no key arguments"
SLOWLOG_COUNT = "ERR count should be greater than or equal to -1"
AOF_OFF = "ERR Background append only file rewriting is not possible: appendonly is off"
AOF_REWRITE_RUNNING = "ERR Background append only file rewriting already in progress"
NO_SHUTDOWN = "ERR No shutdown in progress."


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


def wrong_arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def invalid_expire(name: str) -> str:
    return f"ERR invalid expire time in '{name}' command"


def unknown_command(name: bytes, args: list[bytes]) -> str:
    """Redis shows the name and the first arguments, each cut so that all fit in 128 characters."""
    shown = ""
    for raw in args:
        if len(shown) >= 128:
            break
        shown += "'" + _text(raw)[: 128 - len(shown)] + "' "
    return f"ERR unknown command '{_text(name)[:128]}', with args beginning with: {shown}"


def unknown_subcommand(command: bytes, sub: bytes) -> str:
    return f"ERR unknown subcommand '{_text(sub[:128])}'. Try {_text(command).upper()} HELP."


def unknown_client_type(name: bytes) -> str:
    return f"ERR Unknown client type '{_text(name)}'"


def no_such_user(name: bytes) -> str:
    return f"ERR No such user '{_text(name)}'"


def hello_option(option: bytes) -> str:
    return f"ERR Syntax error in HELLO option '{_text(option)}'"


def unsupported_option(option: bytes) -> str:
    return f"ERR Unsupported option {_text(option)}"


def config_set_failed(name: str, reason: str) -> str:
    return f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}"


def config_set_unknown(name: str) -> str:
    return f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'"


def internal(name: str, exc: Exception) -> str:
    """Not Redis's: a bug in toy-redis costs one reply, not the connection."""
    return f"ERR internal error in '{name}': {type(exc).__name__}"
