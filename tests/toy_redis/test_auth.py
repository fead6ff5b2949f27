"""requirepass: toy-redis and Debian's redis-server 7.0, both with a password, give the same
replies, byte for byte, to clients that have not authenticated, to AUTH and HELLO ... AUTH in
every form, and to the oversized frames Redis refuses before authentication."""

from __future__ import annotations

import hiredis
import pytest

from .conftest import RawClient, RealRedis, ToyRedis, answer_until_closed, assert_same_replies, needs_redis_server

PASSWORD = "differential-pass"

# Each scenario runs on a fresh connection; HELLO's successful replies differ in fields such as
# the client id and are compared by their keys and protocol version.
SCENARIOS = {
    "noauth": [["GET", "k"], ["SET", "k", "v"], ["PING"], ["ECHO", "x"], ["CLIENT", "ID"], ["NOSUCH"],
               ["GET"], ["CONFIG", "GET", "requirepass"]],
    "auth": [["AUTH", "wrong"], ["AUTH", "default", "wrong"], ["AUTH", "nobody", PASSWORD], ["AUTH", "a", "b", "c"],
             ["AUTH"], ["GET", "k"], ["AUTH", PASSWORD], ["SET", "k", "v"], ["GET", "k"], ["AUTH", "wrong"],
             ["GET", "k"], ["AUTH", "default", PASSWORD], ["DEL", "k"]],
    "hello": [["HELLO"], ["HELLO", "3"], ["HELLO", "2", "SETNAME", "app"], ["HELLO", "3", "AUTH", "default", "wrong"],
              ["HELLO", "3", "AUTH", "default"], ["HELLO", "4", "AUTH", "default", PASSWORD], ["HELLO", "x"],
              ["HELLO", "3", "AUTH", "nobody", PASSWORD], ["GET", "k"],
              ["HELLO", "2", "AUTH", "default", PASSWORD, "SETNAME", "app"], ["CLIENT", "GETNAME"], ["GET", "k"]],
    "reset": [["AUTH", PASSWORD], ["PING"], ["RESET"], ["PING"], ["AUTH", PASSWORD], ["PING"]],
}

# Sent raw before authenticating: the whole stream until the server closes the connection.
FRAMES = {
    "many_arguments": b"*11\r\n",
    "big_argument": b"*2\r\n$3\r\nSET\r\n$16385\r\n",
    "ten_small_arguments_are_fine": b"*10\r\n" + b"$1\r\nx\r\n" * 10 + b"QUIT\r\n",
    "inline": b"GET k\r\nAUTH " + PASSWORD.encode() + b"\r\nGET k\r\nQUIT\r\n",
}


def normalize(command: list[str], reply):
    if isinstance(reply, hiredis.ReplyError):
        return ("error", str(reply))
    if command[0] == "HELLO" and isinstance(reply, list):
        fields = dict(zip(reply[::2], reply[1::2]))
        return ("hello", sorted(fields), fields[b"proto"])
    if command[0] == "HELLO" and isinstance(reply, dict):
        return ("hello", sorted(reply), reply[b"proto"])
    return reply


def run(port: int, scenario: list[list[str]]) -> list:
    client = RawClient(port)
    try:
        return [normalize(command, client.call(*command)) for command in scenario]
    finally:
        client.close()


@pytest.fixture(scope="module")
def password_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def toy_with_password(tmp_path_factory, password_file):
    server = ToyRedis(tmp_path_factory.mktemp("toy-auth"), "--requirepass-file", str(password_file)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory):
    server = RealRedis(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD)
    yield server
    server.stop()


@needs_redis_server
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_replies_as_redis_with_a_password(name, toy_with_password, redis_with_password):
    assert_same_replies(run, SCENARIOS[name], redis_with_password.port, toy_with_password.port)


@needs_redis_server
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_same_limits_as_redis_before_authentication(name, toy_with_password, redis_with_password):
    expected = answer_until_closed(redis_with_password.port, FRAMES[name])
    assert expected  # redis-server answered something before closing
    assert answer_until_closed(toy_with_password.port, FRAMES[name]) == expected


def test_password_is_read_from_the_first_line_of_its_file(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("first-line\nsecond-line\n")
    server = ToyRedis(tmp_path, "--requirepass-file", str(password_file)).start()
    try:
        client = RawClient(server.port)
        assert str(client.call("AUTH", "first-line\nsecond-line")).startswith("WRONGPASS")
        assert client.call("AUTH", "first-line") == b"OK"
        client.close()
    finally:
        server.stop()
