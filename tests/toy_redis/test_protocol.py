"""Wire protocol: pipelining, inline commands, protocol errors and limits, RESP3, auth."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from .conftest import RawClient, ToyRedis, answer_until_closed, encode

# Malformed frames: toy-redis and redis-server must answer with the same bytes, then close.
BAD_FRAMES = {
    "bad_multibulk_length": b"*x\r\n",
    "expected_dollar": b"*1\r\n:5\r\n",
    "bad_bulk_length": b"*1\r\n$-5\r\n",
    "huge_multibulk": b"*3000000000\r\n",
    "unbalanced_quotes": b'SET k "abc\r\n',
    "commands_before_error_run": b"*1\r\n$4\r\nPING\r\nSET a 1\r\nGET a\r\n*1\r\n$x\r\n",
    "leading_zero_bulk": b"*1\r\n$04\r\nPING\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_protocol_errors_match_redis_and_close(name, toy, real_redis):
    replies = [answer_until_closed(port, b"FLUSHALL\r\n" + BAD_FRAMES[name]) for port in (real_redis.port, toy.port)]
    assert replies[1] == replies[0]
    assert b"-ERR Protocol error" in replies[1]


def test_oversized_inline_request_is_refused_without_buffering(toy):
    assert answer_until_closed(toy.port, b"A" * (70 * 1024)) == b"-ERR Protocol error: too big inline request\r\n"


def test_bulk_over_proto_max_bulk_len_is_refused(toy):
    reply = answer_until_closed(toy.port, b"*2\r\n$3\r\nGET\r\n$600000000\r\n")
    assert reply == b"-ERR Protocol error: invalid bulk length\r\n"
    assert toy.client().ping()


def test_inline_commands_with_quotes(r, toy):
    client = RawClient(toy.port)
    client.send(b'SET greeting "hello \\"world\\"\\n"\r\nGET greeting\r\nSET single \'it\\\'s\'\r\nGET single\r\n\r\nPING\n')
    assert [client.read() for _ in range(5)] == [b"OK", b'hello "world"\n', b"OK", b"it's", b"PONG"]
    client.close()


def test_pipeline_replies_stay_in_order(r):
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"k{i}", i)
        pipe.get(f"k{i}")
        pipe.incr("counter")
    replies = pipe.execute()
    for i in range(2000):
        assert replies[3 * i : 3 * i + 3] == [True, str(i).encode(), i + 1]


def test_commands_split_across_reads_and_many_per_read(toy):
    client = RawClient(toy.port)
    frame = client.command("SET", "split", "x" * 1000) + client.command("GET", "split")
    for byte in range(0, len(frame), 7):
        client.send(frame[byte : byte + 7])
        time.sleep(0.0005)
    assert client.read() == b"OK"
    assert client.read() == b"x" * 1000
    client.send(client.command("PING") * 500)
    assert [client.read() for _ in range(500)] == [b"PONG"] * 500
    client.close()


def test_connection_stays_usable_after_command_errors(r):
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("NOPE")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    # The bug from the original notes: the second command on a reused connection was never read.
    assert r.set("after", "1") and r.get("after") == b"1"


def test_reused_connection_serves_many_commands(r):
    for i in range(200):
        assert r.set("k", i)
        assert r.get("k") == str(i).encode()


def test_quit_replies_then_closes(toy):
    assert answer_until_closed(toy.port, encode("QUIT")) == b"+OK\r\n"


def test_resp3_after_hello(toy):
    client = RawClient(toy.port)
    hello = client.call("HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"server"] == b"redis"
    client.send(client.command("GET", "missing-key"))
    client.sock.settimeout(5)
    assert client.sock.recv(100) == b"_\r\n"
    client.send(client.command("CONFIG", "GET", "maxmemory"))
    assert client.sock.recv(100) == b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    client.send(client.command("HELLO", "2"))
    client.read()
    client.send(client.command("GET", "missing-key"))
    assert client.sock.recv(100) == b"$-1\r\n"
    client.close()


def test_redis_py_resp3_client_works(toy):
    client = toy.client(protocol=3)
    client.set("k", "v", ex=100)
    assert client.get("k") == b"v"
    assert client.get("missing") is None
    assert client.config_get("maxmemory") == {b"maxmemory": b"0"} or client.config_get("maxmemory") == {"maxmemory": "0"}
    client.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("secured")
    password_file = workdir / "password"
    password_file.write_text("s3cret-pass\n")
    password_file.chmod(0o600)
    server = ToyRedis(workdir, "--requirepass-file", str(password_file), "--maxclients", "3").start()
    yield server
    server.stop()


def test_requirepass_blocks_until_auth(secured):
    client = RawClient(secured.port)
    assert str(client.call("GET", "k")) == "NOAUTH Authentication required."
    assert str(client.call("AUTH", "wrong")).startswith("WRONGPASS")
    assert client.call("AUTH", "s3cret-pass") == b"OK"
    assert client.call("SET", "k", "v") == b"OK"
    client.close()
    authed = secured.client(password="s3cret-pass")
    assert authed.get("k") == b"v"
    authed.close()


def test_unauthenticated_clients_may_not_send_big_frames(secured):
    reply = answer_until_closed(secured.port, b"*100\r\n")
    assert reply == b"-ERR Protocol error: unauthenticated multibulk length\r\n"


def test_hello_can_authenticate(secured):
    client = RawClient(secured.port)
    reply = client.call("HELLO", "3", "AUTH", "default", "s3cret-pass", "SETNAME", "app")
    assert reply[b"proto"] == 3
    assert client.call("CLIENT", "GETNAME") == b"app"
    client.close()


def test_password_never_in_logs(secured):
    client = RawClient(secured.port)
    client.call("AUTH", "s3cret-pass")
    client.call("CONFIG", "SET", "slowlog-log-slower-than", "0")
    client.call("AUTH", "s3cret-pass")
    slowlog = client.call("SLOWLOG", "GET", "-1")
    client.call("CONFIG", "SET", "slowlog-log-slower-than", "10000")
    client.close()
    assert b"s3cret-pass" not in repr(slowlog).encode()
    assert b"s3cret-pass" not in secured.log_file.read_bytes()
    assert b"(redacted)" in repr(slowlog).encode()


def test_maxclients_rejects_extra_connections_with_redis_error(secured):
    clients = [RawClient(secured.port) for _ in range(3)]
    for client in clients:
        client.call("AUTH", "s3cret-pass")
    extra = RawClient(secured.port)
    assert extra.read_until_closed() == b"-ERR max number of clients reached\r\n"
    extra.close()
    for client in clients:
        client.close()
    time.sleep(0.2)
    again = RawClient(secured.port)
    assert again.call("AUTH", "s3cret-pass") == b"OK"
    again.close()


def test_client_that_never_reads_is_paused_not_buffered(toy):
    """A client pipelining big replies without reading them must not grow the server's memory."""
    setup = toy.client()
    setup.set("big", "x" * 1_000_000)
    setup.close()
    sock = socket.create_connection(("127.0.0.1", toy.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 200
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            sent += sock.send(request)
        except BlockingIOError:
            time.sleep(0.05)
    # 2 s of sending: the server stopped reading once its output for us piled up.
    info = toy.client().info("memory")
    assert info["used_memory_rss"] < 400 * 1024 * 1024
    assert sent < 200 * len(request) * 50
    sock.close()
    assert toy.client().ping()


def test_output_buffer_limit_drops_the_client(toy):
    admin = toy.client()
    admin.config_set("client-output-buffer-limit", "normal 1mb 0 0")
    # Far more than the kernel's socket buffers can take, so most of it waits in toy-redis.
    admin.set("big", "x" * 30_000_000)
    try:
        sock = socket.create_connection(("127.0.0.1", toy.port))
        sock.sendall(b"GET big\r\n")
        time.sleep(0.5)
        received = 0
        sock.settimeout(5)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += len(data)
        assert received < 30_000_000
        sock.close()
        assert admin.ping()
    finally:
        admin.config_set("client-output-buffer-limit", "normal 256mb 0 0")
        admin.close()


def test_command_with_many_arguments_across_many_reads(r, toy):
    pairs = {f"key:{i}": f"value:{i}" for i in range(50_000)}
    assert r.mset(pairs)
    assert r.dbsize() == 50_000
    assert r.mget(["key:0", "key:49999"]) == [b"value:0", b"value:49999"]
    client = RawClient(toy.port)
    frame = client.command("MSET", *[x for kv in list(pairs.items())[:2000] for x in kv])
    for start in range(0, len(frame), 1000):
        client.send(frame[start : start + 1000])
    assert client.read() == b"OK"
    client.close()
