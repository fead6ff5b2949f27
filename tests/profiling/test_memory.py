"""toy-redis's allocation view (TRACEMALLOC, what `homelab profile --memory` asks for), on a real
toy-redis with a planted leak: the leaking line tops the growth, tracing ends with the window, and
it answers only clients that logged in."""

from __future__ import annotations

import time

import pytest
import redis

from homelab import profiling
from tests.loopback import wait_for
from tests.planted import COSTS, LEAK_LINE
from tests.profiling.conftest import Load
from tests.toy_redis.conftest import ToyRedis

def test_the_leaking_line_tops_the_growth(planted_toy):
    with planted_toy.client() as client, Load(planted_toy.client, "PLANTED.LEAK", "64", pause=0.01):
        sites = profiling.allocations(client, 2)
    top = max(sites, key=lambda site: site.growth)
    assert (top.file, top.line) == (str(COSTS), LEAK_LINE)
    assert top.growth > 1024 * 1024 and top.size >= top.growth
    assert profiling.memory_summary(sites).startswith(f"growth: {COSTS.name}:{LEAK_LINE} +")


def test_tracing_is_off_after_the_report(planted_toy):
    with planted_toy.client() as client:
        profiling.allocations(client, 1)
        with pytest.raises(redis.ResponseError, match="allocation tracing is off"):
            client.execute_command("TRACEMALLOC", "REPORT", 1)


def test_tracing_stops_by_itself_when_the_operator_goes_away(planted_toy):
    with planted_toy.client() as client:
        client.execute_command("TRACEMALLOC", "START", 1)
        client.execute_command("TRACEMALLOC", "REPORT", 1)

        def stopped() -> bool:
            try:
                client.execute_command("TRACEMALLOC", "REPORT", 1)
            except redis.ResponseError:
                return True
            return False

        wait_for(stopped, timeout=5, what="tracing to stop after its 1 s")


@pytest.mark.parametrize("argv, error", [
    (["START", "0"], "seconds must be between 1 and"), (["REPORT", "1000"], "count must be between 1 and"),
    (["START", "x"], "value is not an integer"), (["NOSUCH"], "unknown subcommand"),
])
def test_bad_arguments_get_an_error_reply(planted_toy, argv, error):
    with planted_toy.client() as client, pytest.raises(redis.ResponseError, match=error):
        client.execute_command("TRACEMALLOC", *argv)


def test_only_clients_that_logged_in_may_trace(tmp_path):
    password_file = tmp_path / "requirepass"
    password_file.write_text("s3cret\n")
    password_file.chmod(0o600)
    toy = ToyRedis(tmp_path, "--requirepass-file", str(password_file)).start()
    try:
        with toy.client() as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.execute_command("TRACEMALLOC", "START", 5)
        with toy.client(password="s3cret") as client:
            assert profiling.allocations(client, 1, sleep=time.sleep) is not None
    finally:
        toy.stop()
