"""The same commands sent to toy-redis and to Debian's redis-server 7.0 get the same replies.

Replies are compared as parsed RESP (type and value, error text included), one scenario per
test, each starting from an empty database on a fresh connection.
"""

from __future__ import annotations

import hiredis
import pytest

from .conftest import RawClient, assert_same_replies

SCENARIOS = {
    "ping_echo": [["PING"], ["PING", "hi"], ["PING", "a", "b"], ["ECHO", "x y"], ["ECHO"], ["ping"]],
    "unknown_command": [["NOSUCH"], ["NOSUCH", "a", "b c"], ["nosuch", "x" * 300], ["GET", "k"]],
    "select": [["SELECT", "0"], ["SELECT", "1"], ["SELECT", "x"], ["SELECT", "-1"]],
    "set_get": [
        ["SET", "k", "v"], ["GET", "k"], ["GET", "missing"], ["SET", "k"], ["SET", "k", "v", "BAD"],
        ["SET", "k", "v2", "GET"], ["SET", "new", "v", "GET"], ["SET", "k", "v", "NX"], ["SET", "k", "v3", "XX"],
        ["GET", "k"], ["SET", "other", "v", "XX"], ["SET", "k", "v", "NX", "XX"], ["SET", "k", "v", "NX", "GET"],
        ["SET", "n", "v", "NX", "GET"], ["GET", "n"],
    ],
    "set_expiry_options": [
        ["SET", "k", "v", "EX", "100"], ["TTL", "k"], ["SET", "k", "v", "PX", "100000"], ["TTL", "k"],
        ["SET", "k", "v", "EX", "0"], ["SET", "k", "v", "EX", "-5"], ["SET", "k", "v", "EX", "x"],
        ["SET", "k", "v", "EX", "10", "PX", "10"], ["SET", "k", "v", "EX"], ["SET", "k", "v", "KEEPTTL", "EX", "1"],
        ["SET", "k", "v", "EX", "9223372036854775807"], ["SET", "k", "v", "PX", "9223372036854775807"],
        ["SET", "k", "v", "EX", "100"], ["SET", "k", "v2", "KEEPTTL"], ["TTL", "k"], ["SET", "k", "v3"], ["TTL", "k"],
        ["SET", "k", "v", "EXAT", "1"], ["GET", "k"], ["SET", "k", "v", "PXAT", "99999999999999"], ["TTL", "k"],
        ["SET", "k", "v", "EX", "01"], ["SET", "k", "v", "EX", "+1"], ["SET", "k", "v", "ex", "100", "get"],
    ],
    "setnx_setex": [
        ["SETNX", "k", "1"], ["SETNX", "k", "2"], ["GET", "k"], ["SETEX", "k", "100", "v"], ["TTL", "k"],
        ["SETEX", "k", "0", "v"], ["SETEX", "k", "-1", "v"], ["SETEX", "k", "x", "v"], ["PSETEX", "k", "0", "v"],
        ["PSETEX", "k", "100000", "v"], ["TTL", "k"], ["SETEX", "k", "1"],
    ],
    "getset_getdel_getex": [
        ["GETSET", "k", "a"], ["SET", "k", "a", "EX", "100"], ["GETSET", "k", "b"], ["TTL", "k"],
        ["GETDEL", "k"], ["GETDEL", "k"], ["EXISTS", "k"], ["SET", "k", "v"], ["GETEX", "k"],
        ["GETEX", "k", "EX", "100"], ["TTL", "k"], ["GETEX", "k", "PERSIST"], ["TTL", "k"], ["GETEX", "k", "EX", "0"],
        ["GETEX", "k", "EX", "10", "PERSIST"], ["GETEX", "k", "KEEPTTL"], ["GETEX", "k", "NX"], ["GETEX", "missing", "EX", "10"],
        ["GETEX", "k", "PXAT", "1"], ["EXISTS", "k"],
    ],
    "mget_mset": [
        ["MSET", "a", "1", "b", "2"], ["MGET", "a", "b", "c"], ["MSET", "a"], ["MSET", "a", "1", "b"],
        ["MSETNX", "c", "3", "d", "4"], ["MSETNX", "d", "5", "e", "6"], ["MGET", "c", "d", "e"], ["MSETNX", "x"],
    ],
    "append_strlen_ranges": [
        ["APPEND", "k", "Hello"], ["APPEND", "k", " World"], ["STRLEN", "k"], ["STRLEN", "none"],
        ["GETRANGE", "k", "0", "4"], ["GETRANGE", "k", "-5", "-1"], ["GETRANGE", "k", "5", "2"],
        ["GETRANGE", "k", "-1", "-5"], ["GETRANGE", "k", "0", "1000"], ["GETRANGE", "k", "x", "1"],
        ["GETRANGE", "none", "0", "-1"], ["GETRANGE", "k", "-100", "2"],
        ["SETRANGE", "k", "6", "Redis"], ["GET", "k"], ["SETRANGE", "pad", "5", "x"], ["GET", "pad"],
        ["SETRANGE", "k", "-1", "x"], ["SETRANGE", "empty", "3", ""], ["EXISTS", "empty"],
        ["SETRANGE", "k", "0", ""], ["SETRANGE", "k", "536870912", "x"], ["SETRANGE", "k", "x", "y"],
    ],
    "counters": [
        ["INCR", "n"], ["INCRBY", "n", "10"], ["DECR", "n"], ["DECRBY", "n", "3"], ["GET", "n"],
        ["SET", "s", "abc"], ["INCR", "s"], ["INCRBY", "n", "x"], ["INCRBY", "n", "1.5"],
        ["SET", "big", "9223372036854775807"], ["INCR", "big"], ["SET", "small", "-9223372036854775808"],
        ["DECR", "small"], ["DECRBY", "n", "-9223372036854775808"], ["SET", "sp", " 1"], ["INCR", "sp"],
        ["SET", "z", "01"], ["INCR", "z"], ["SET", "e", "10", "EX", "100"], ["INCR", "e"], ["TTL", "e"],
        ["INCRBY", "n", "99999999999999999999"],
    ],
    "incr_repeated": [
        ["INCR", "c"], ["INCR", "c"], ["SET", "c", "x"], ["INCR", "c"], ["SET", "c", "999999999999999998"],
        ["INCR", "c"], ["INCR", "c"], ["INCR", "c"], ["GET", "c"], ["COPY", "c", "d"], ["INCR", "d"], ["INCR", "c"],
        ["SET", "c", "-3"], ["INCR", "c"], ["INCR", "c"], ["INCR", "c"], ["INCR", "c"], ["APPEND", "c", "0"],
        ["INCR", "c"], ["SET", "m", "9223372036854775806"], ["INCR", "m"], ["INCR", "m"], ["GET", "m"],
    ],
    "incrbyfloat": [
        ["INCRBYFLOAT", "f", "10.5"], ["INCRBYFLOAT", "f", "0.1"], ["INCRBYFLOAT", "f", "-5"],
        ["INCRBYFLOAT", "g", "0.1"], ["INCRBYFLOAT", "g", "0.2"], ["INCRBYFLOAT", "f", "abc"],
        ["INCRBYFLOAT", "h", "5.0e3"], ["INCRBYFLOAT", "h", "2.0e2"], ["SET", "s", "x"], ["INCRBYFLOAT", "s", "1"],
        ["INCRBYFLOAT", "f", "inf"], ["INCRBYFLOAT", "i", "3"], ["INCRBYFLOAT", "j", "-0.0"], ["INCRBYFLOAT", "k", " 1"],
        ["INCRBYFLOAT", "i", "1.25"], ["GET", "i"],
    ],
    "keyspace": [
        ["MSET", "a", "1", "b", "2", "c", "3"], ["DEL", "a", "b", "zz"], ["UNLINK", "c"], ["EXISTS", "a", "a", "b"],
        ["SET", "a", "1"], ["EXISTS", "a", "a"], ["TYPE", "a"], ["TYPE", "nope"], ["DBSIZE"],
        ["RENAME", "a", "b"], ["GET", "b"], ["RENAME", "missing", "x"], ["RENAME", "b", "b"],
        ["SET", "c", "3"], ["RENAMENX", "b", "c"], ["RENAMENX", "b", "d"], ["RENAMENX", "d", "d"],
        ["RENAMENX", "missing", "x"], ["DBSIZE"],
    ],
    "rename_keeps_ttl": [
        ["SET", "a", "1", "EX", "100"], ["RENAME", "a", "b"], ["TTL", "b"], ["SET", "c", "x", "EX", "50"],
        ["SET", "d", "y"], ["RENAME", "d", "c"], ["TTL", "c"],
    ],
    "copy": [
        ["SET", "a", "1", "EX", "100"], ["COPY", "a", "b"], ["GET", "b"], ["TTL", "b"], ["COPY", "a", "b"],
        ["COPY", "a", "b", "REPLACE"], ["COPY", "a", "a"], ["COPY", "missing", "x"], ["COPY", "a", "c", "DB", "0"],
        ["COPY", "a", "c", "DB", "x"], ["COPY", "a", "c", "BAD"],
    ],
    "keys_patterns": [
        ["MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeeello", "5", "a*b", "6"],
        ["KEYS", "h?llo"], ["KEYS", "h*llo"], ["KEYS", "h[ae]llo"], ["KEYS", "h[^e]llo"], ["KEYS", "h[a-b]llo"],
        ["KEYS", "a\\*b"], ["KEYS", "nomatch*"], ["KEYS"],
    ],
    "expire_family": [
        ["SET", "k", "v"], ["EXPIRE", "k", "100"], ["TTL", "k"], ["EXPIRE", "k", "100", "NX"],
        ["EXPIRE", "k", "200", "XX"], ["TTL", "k"], ["EXPIRE", "k", "50", "GT"], ["EXPIRE", "k", "300", "GT"],
        ["TTL", "k"], ["EXPIRE", "k", "400", "LT"], ["EXPIRE", "k", "10", "LT"], ["TTL", "k"],
        ["EXPIRE", "k", "10", "NX", "XX"], ["EXPIRE", "k", "10", "GT", "LT"], ["EXPIRE", "k", "10", "FOO"],
        ["EXPIRE", "k", "x"], ["EXPIRE", "missing", "10"], ["PERSIST", "k"], ["PERSIST", "k"], ["TTL", "k"],
        ["EXPIRE", "k", "10", "GT"], ["EXPIRE", "k", "10", "LT"], ["TTL", "k"], ["PERSIST", "missing"],
        ["EXPIRE", "k", "-1"], ["EXISTS", "k"], ["TTL", "k"], ["PTTL", "k"],
        ["SET", "k", "v"], ["PEXPIRE", "k", "100000"], ["TTL", "k"], ["EXPIREAT", "k", "99999999999"],
        ["EXPIRETIME", "k"], ["PEXPIRETIME", "k"], ["PEXPIREAT", "k", "99999999999000"], ["EXPIRETIME", "k"],
        ["EXPIRETIME", "missing"], ["SET", "p", "v"], ["EXPIRETIME", "p"], ["PEXPIRETIME", "p"],
        ["EXPIRE", "k", "9223372036854775807"], ["PEXPIRE", "k", "9223372036854775807"], ["EXPIREAT", "k", "0"],
        ["EXISTS", "k"],
    ],
    "flush": [
        ["SET", "a", "1"], ["FLUSHDB"], ["DBSIZE"], ["SET", "a", "1"], ["FLUSHALL", "ASYNC"], ["DBSIZE"],
        ["FLUSHALL", "SYNC"], ["FLUSHALL", "BAD"], ["FLUSHDB", "a", "b"],
    ],
    "scan_errors": [["SCAN", "x"], ["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "BAD"], ["SCAN", "0", "COUNT"],
                    ["SCAN", "-1"], ["SCAN", "0", "COUNT", "x"]],
    "client_names": [
        ["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "worker-1"], ["CLIENT", "GETNAME"],
        ["CLIENT", "SETNAME", "bad name"], ["CLIENT", "SETNAME"], ["CLIENT", "NOPE"], ["CLIENT", "SETNAME", ""],
        ["CLIENT", "GETNAME"],
    ],
    "client_kill_errors": [
        ["CLIENT", "KILL"], ["CLIENT", "KILL", "1.2.3.4:5"], ["CLIENT", "KILL", "ID"], ["CLIENT", "KILL", "ID", "0"],
        ["CLIENT", "KILL", "ID", "x"], ["CLIENT", "KILL", "TYPE", "nope"], ["CLIENT", "KILL", "USER", "nobody"],
        ["CLIENT", "KILL", "SKIPME", "maybe"], ["CLIENT", "KILL", "BOGUS", "1"], ["CLIENT", "KILL", "ID", "1", "TYPE"],
        ["CLIENT", "KILL", "ID", "999999"], ["CLIENT", "KILL", "TYPE", "master"], ["CLIENT", "KILL", "USER", "default", "ID", "999999"],
    ],
    "config_get_several": [
        ["CONFIG", "GET", "maxmemory", "maxclients"], ["CONFIG", "GET", "maxmemory", "maxmemory"],
        ["CONFIG", "GET", "appendonly", "nosuch", "slowlog-max-len"], ["CONFIG", "GET", "nosuch"],
    ],
    "config_errors": [
        ["CONFIG", "GET", "maxmemory"], ["CONFIG", "SET", "maxmemory", "lots"], ["CONFIG", "SET", "nosuch", "1"],
        ["CONFIG", "GET", "maxmemory-policy"], ["CONFIG", "BOGUS"], ["CONFIG", "GET"],
    ],
    "hello_errors": [["HELLO", "4"], ["HELLO", "x"], ["HELLO", "2", "BOGUS"], ["AUTH", "pw"], ["AUTH", "a", "b"]],
    "slowlog_and_time": [["SLOWLOG", "LEN", "x"], ["SLOWLOG", "GET", "-2"], ["SLOWLOG", "NOPE"], ["TIME", "x"]],
    "wrong_arity": [["GET"], ["GET", "a", "b"], ["SET", "a"], ["INCR"], ["DEL"], ["EXPIRE", "a"], ["TTL"],
                    ["RENAME", "a"], ["DBSIZE", "x"], ["GETRANGE", "a", "1"]],
}


def normalize(reply):
    if isinstance(reply, hiredis.ReplyError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [normalize(item) for item in reply]
    return reply


# Replies that are sets in Redis's contract (hash-table order): compared sorted.
UNORDERED = {"KEYS"}


def run(port: int, scenario: list[list[str]]) -> list:
    client = RawClient(port)
    try:
        client.call("FLUSHALL")
        replies = []
        for command in scenario:
            reply = normalize(client.call(*command))
            if command[0].upper() in UNORDERED and isinstance(reply, list):
                reply = sorted(reply)
            if command[:2] == ["CONFIG", "GET"] and isinstance(reply, list):
                reply = sorted(zip(reply[::2], reply[1::2]))  # a map: Redis's order is its hash order
            replies.append(reply)
        return replies
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_replies_as_redis(name, toy, real_redis):
    assert_same_replies(run, SCENARIOS[name], real_redis.port, toy.port)


def test_incrbyfloat_rounds_like_a_long_double(toy, real_redis):
    sequence = [["SET", "a", "10.5"], ["INCRBYFLOAT", "a", "9223372036854775807"], ["INCRBYFLOAT", "b", "1e4000"],
                ["INCRBYFLOAT", "b", "1e5000"], ["INCRBYFLOAT", "c", "1e-5000"], ["INCRBYFLOAT", "d", "-1e-20"],
                ["INCRBYFLOAT", "e", "3.0000000000000000001"], ["INCRBYFLOAT", "f", "-inf"], ["INCRBYFLOAT", "g", "0.1"],
                ["INCRBYFLOAT", "g", "0.2"], ["INCRBYFLOAT", "g", "-0.3"], ["INCRBYFLOAT", "h", "1e999999999"],
                ["INCRBYFLOAT", "i", "1e-4940"], ["INCRBYFLOAT", "i", "1e-4900"], ["INCRBYFLOAT", "j", "1e4932"],
                ["INCRBYFLOAT", "j", "1e4932"]]
    assert run(toy.port, sequence) == run(real_redis.port, sequence)
