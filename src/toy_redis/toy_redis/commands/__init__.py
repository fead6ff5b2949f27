"""Redis's commands, one module per command group (as mini-redis and fakeredis lay them out):
connection, strings, keyspace, expiry, and server (introspection and administration). Importing
the package registers them all in COMMANDS."""

from . import connection, expiry, keyspace, server, strings  # noqa: F401  (each registers its commands)
from .base import COMMANDS, SUBCOMMANDS, Command

__all__ = ["COMMANDS", "SUBCOMMANDS", "Command"]
