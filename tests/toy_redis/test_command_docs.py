"""COMMAND DOCS is Redis 7.0's for every command toy-redis has, so redis-cli shows its argument
hints and `help SET` its syntax.

toy_redis/command_docs.json holds redis-server's replies, with only the subcommands toy-redis
has. To write it again from Debian's redis-server (after adding a command):
    redis-server --port 7391 --save "" & .venv/bin/python -m tests.toy_redis.test_command_docs 7391
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from toy_redis.commands import COMMANDS, SUBCOMMANDS

from .conftest import RawClient

DOCS_FILE = Path(__import__("toy_redis").__file__).parent / "command_docs.json"


def read_resp3(sock_file):
    """One RESP3 reply with its types kept: sets as {"~": [...]}, simple strings as {"+": s}."""
    line = sock_file.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind == b"$":
        data = sock_file.read(int(rest) + 2)[:-2]
        return data.decode()
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return {"+": rest}
    if kind == b"*":
        return [read_resp3(sock_file) for _ in range(int(rest))]
    if kind == b"~":
        return {"~": [read_resp3(sock_file) for _ in range(int(rest))]}
    if kind == b"%":
        return {read_resp3(sock_file): read_resp3(sock_file) for _ in range(int(rest))}
    raise ValueError(f"unexpected RESP3 reply {line!r}")


def docs_from(port: int) -> dict:
    """COMMAND DOCS for toy-redis's commands, as the server on `port` gives them."""
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as sock_file:
        sock.sendall(b"HELLO 3\r\n")
        read_resp3(sock_file)
        sock.sendall(b"COMMAND DOCS " + b" ".join(sorted(COMMANDS)) + b"\r\n")
        docs = read_resp3(sock_file)
    for name, entry in docs.items():
        if "subcommands" in entry:
            entry["subcommands"] = {sub: doc for sub, doc in entry["subcommands"].items()
                                    if sub.split("|")[1] in SUBCOMMANDS[name]}
    return docs


def test_docs_file_is_redis_servers_docs(real_redis):
    assert json.loads(DOCS_FILE.read_text()) == docs_from(real_redis.port)


@pytest.mark.parametrize("protocol", [2, 3])
def test_command_docs_replies_like_redis(toy, real_redis, protocol):
    replies = []
    for port in (real_redis.port, toy.port):
        client = RawClient(port)
        if protocol == 3:
            client.call("HELLO", "3")
        replies.append([client.call("COMMAND", "DOCS", name) for name in ("get", "set", "expire", "nosuch")])
        client.close()
    assert replies[1] == replies[0]


@pytest.mark.parametrize("command", ["SET", "GETEX", "CLIENT KILL", "EXPIRE"])
def test_redis_cli_help_shows_the_syntax(toy, real_redis, command):
    outputs = [subprocess.run(["redis-cli", "-p", str(port)], input=f"help {command}\n", capture_output=True,
                              text=True, timeout=30).stdout for port in (real_redis.port, toy.port)]
    assert "summary:" in outputs[0]
    assert outputs[1] == outputs[0]


if __name__ == "__main__":
    DOCS_FILE.write_text(json.dumps(docs_from(int(sys.argv[1])), indent=1) + "\n")
