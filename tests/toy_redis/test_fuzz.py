"""Hypothesis-driven protocol fuzzing: whatever bytes arrive, the server neither crashes nor hangs,
the parser gives the same commands however the stream is cut, and random command sequences get
the same replies from toy-redis as from redis-server."""

from __future__ import annotations

import socket

import hiredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_redis.protocol import RequestParser

from .conftest import RawClient


def frame(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


protocol_tokens = st.sampled_from(
    [b"*", b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"99999999999", b"GET", b"SET", b"PING", b" ", b'"', b"'",
     b"\\x", b"\x00", b"*1\r\n", b"$4\r\nPING\r\n", b"*2\r\n$3\r\nGET\r\n", b"+OK", b":1", b"HELLO 3\r\n"]
)
fuzz_streams = st.one_of(
    st.binary(max_size=300),
    st.lists(protocol_tokens, max_size=40).map(b"".join),
    st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=5).map(frame), max_size=5).map(b"".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=fuzz_streams, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_server_survives_any_bytes(toy, stream, cuts):
    sock = socket.create_connection(("127.0.0.1", toy.port), timeout=5)
    try:
        last = 0
        for cut in sorted(set(cuts)) + [len(stream)]:
            if cut > last:
                sock.sendall(stream[last:cut])
                last = cut
        sock.shutdown(socket.SHUT_WR)
        # The server answers what it can and then closes (EOF from us or a protocol error).
        while sock.recv(65536):
            pass
    except (ConnectionError, OSError) as exc:
        # Closed by the server after a protocol error, while we were still sending: allowed.
        assert not isinstance(exc, TimeoutError), "the server hung"
    finally:
        sock.close()
    probe = RawClient(toy.port, timeout=5)
    assert probe.call("PING") == b"PONG"
    probe.close()


commands = st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(commands, min_size=1, max_size=10), cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6))
def test_parser_result_does_not_depend_on_how_reads_are_cut(batch, cuts):
    parser = RequestParser()
    assert parse_in_pieces(parser, b"".join(frame(args) for args in batch), cuts) == batch
    assert parser.pending() == 0


def parse_in_pieces(parser: RequestParser, stream: bytes, cuts: list[int]) -> list[list[bytes]]:
    """The commands parsed from stream fed in pieces cut at `cuts`."""
    parsed, last = [], 0
    for cut in sorted(set(c for c in cuts if c < len(stream))) + [len(stream)]:
        got, error = parser.feed(stream[last:cut])
        assert error is None
        parsed.extend(got)
        last = cut
    return parsed


keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["", "1", "-7", "10.5", "abc", "9223372036854775807", "x" * 30])
numbers = st.sampled_from(["0", "1", "-1", "5", "100", "x", "1.5", "-9223372036854775808"])
# TTLs either invalid or long enough that no key expires while a sequence runs (no timing races).
expire_times = st.sampled_from(["0", "-1", "100000", "x", "1.5", "9223372036854775807"])
random_command = st.one_of(
    st.tuples(st.just("SET"), keys, values),
    st.tuples(st.just("SET"), keys, values, st.sampled_from(["NX", "XX", "GET", "KEEPTTL", "EX", "PX"]), expire_times),
    st.tuples(st.sampled_from(["GET", "GETDEL", "STRLEN", "INCR", "DECR", "TYPE", "EXISTS", "DEL", "TTL", "PERSIST"]), keys),
    st.tuples(st.sampled_from(["INCRBY", "DECRBY", "APPEND", "SETNX", "GETSET", "INCRBYFLOAT"]), keys, st.one_of(values, numbers)),
    st.tuples(st.sampled_from(["EXPIRE", "PEXPIRE"]), keys, expire_times,
              st.sampled_from(["NX", "XX", "GT", "LT", "BAD"])),
    st.tuples(st.sampled_from(["GETRANGE", "SETRANGE"]), keys, numbers, st.one_of(numbers, values)),
    st.tuples(st.sampled_from(["RENAME", "RENAMENX", "COPY"]), keys, keys),
    st.tuples(st.sampled_from(["MGET", "MSET", "MSETNX"]), keys, values, keys, values),
    st.tuples(st.just("GETEX"), keys, st.sampled_from(["PERSIST", "EX", "PX", "KEEPTTL"]), expire_times),
)


def replies(port: int, sequence) -> list:
    client = RawClient(port)
    try:
        client.call("FLUSHALL")
        out = []
        for command in sequence:
            reply = client.call(*command)
            out.append(("error", str(reply)) if isinstance(reply, hiredis.ReplyError) else reply)
        return out
    finally:
        client.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(random_command, min_size=1, max_size=12))
def test_random_command_sequences_match_redis(toy, real_redis, sequence):
    assert replies(toy.port, sequence) == replies(real_redis.port, sequence)


def python_only_parser() -> RequestParser:
    parser = RequestParser()
    parser.reader = None  # as on a node without hiredis >= 2
    return parser


@settings(max_examples=500, deadline=None)
@given(stream=st.one_of(fuzz_streams, st.lists(commands, max_size=8).map(lambda b: b"".join(frame(a) for a in b))),
       authenticated=st.booleans())
def test_hiredis_fast_path_agrees_with_the_python_parser(stream, authenticated):
    fast, slow = RequestParser(), python_only_parser()
    fast_commands, fast_error = fast.feed(stream, authenticated)
    slow_commands, slow_error = slow.feed(stream, authenticated)
    assert fast_commands == slow_commands
    assert str(fast_error) == str(slow_error)
    assert fast.pending() == slow.pending()


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(commands, min_size=1, max_size=10), cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6))
def test_python_parser_alone_handles_cut_reads(batch, cuts):
    assert parse_in_pieces(python_only_parser(), b"".join(frame(args) for args in batch), cuts) == batch


@settings(max_examples=100, deadline=None)
@given(big=st.integers(min_value=32 * 1024, max_value=300_000), cuts=st.lists(st.integers(min_value=1, max_value=400_000), max_size=8))
def test_big_arguments_cut_anywhere_parse_the_same(big, cuts):
    """A big bulk argument goes into its own buffer as it arrives: the commands are the same."""
    batch = [[b"SET", b"k", bytes(range(256)) * (big // 256) + b"x" * (big % 256)], [b"GET", b"k"]]
    stream = b"".join(frame(args) for args in batch)
    for parser in (RequestParser(), python_only_parser()):
        assert parse_in_pieces(parser, stream, cuts) == batch
        assert parser.pending() == 0
