"""INFO, CONFIG, COMMAND, SLOWLOG, CLIENT, TIME, maxmemory policies and the Prometheus metrics."""

from __future__ import annotations

import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from toy_redis.config import Config, bounds, redis_names
from toy_redis.runtime_config import MEMORY_VALUES

from .conftest import RawClient, ToyRedis

CONTRACT_METRICS = [
    "toy_redis_commands", "toy_redis_errors", "toy_redis_command_duration_seconds", "toy_redis_keys",
    "toy_redis_keys_with_ttl", "toy_redis_expired_keys", "toy_redis_expired_stale_ratio", "toy_redis_evicted_keys",
    "toy_redis_rejected_connections", "toy_redis_connected_clients", "toy_redis_connections",
    "toy_redis_net_input_bytes", "toy_redis_net_output_bytes", "toy_redis_event_loop_lag_seconds",
    "toy_redis_used_memory_bytes", "process_resident_memory_bytes",
]


def scrape(toy) -> dict:
    response = requests.get(f"http://127.0.0.1:{toy.metrics_port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample(families, name, **labels) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_follow_the_contract(r, toy):
    r.set("a", "1", ex=100)
    r.get("a")
    r.get("a")
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOPE")
    families = scrape(toy)
    for name in CONTRACT_METRICS:
        assert name in families, name
    assert sample(families, "toy_redis_commands_total", command="get") >= 2
    assert sample(families, "toy_redis_errors_total", kind="unknown_command") >= 1
    assert sample(families, "toy_redis_keys") == 1
    assert sample(families, "toy_redis_keys_with_ttl") == 1
    assert sample(families, "toy_redis_connected_clients") >= 1
    assert sample(families, "toy_redis_net_input_bytes_total") > 0
    assert sample(families, "process_resident_memory_bytes") > 0
    buckets = [s for s in families["toy_redis_command_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["command"] == "get"]
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds[0] == 0.00001 and bounds[-2] == 1.0 and bounds[-1] == float("inf")
    assert buckets[-1].value == sample(families, "toy_redis_commands_total", command="get")


def test_metrics_port_answers_404_elsewhere(toy):
    assert requests.get(f"http://127.0.0.1:{toy.metrics_port}/nothing", timeout=5).status_code == 404


def test_info_sections(r):
    r.set("a", "1", ex=100)
    r.set("b", "2")
    info = r.info()
    assert info["redis_version"].startswith("7.")
    assert info["connected_clients"] >= 1
    assert info["db0"]["keys"] == 2 and info["db0"]["expires"] == 1
    assert 90_000 < info["db0"]["avg_ttl"] <= 100_000
    for section, key in [("server", "tcp_port"), ("clients", "maxclients"), ("memory", "used_memory"),
                         ("persistence", "aof_enabled"), ("stats", "expired_keys"), ("keyspace", "db0")]:
        assert key in r.info(section), (section, key)
    assert "cmdstat_set" in r.info("commandstats")


def test_config_set_and_get(r):
    assert r.config_set("maxmemory", "10mb")
    assert r.config_get("maxmemory") == {"maxmemory": "10485760"}
    r.config_set("maxmemory", "0")
    with pytest.raises(redis.ResponseError, match="argument must be a memory value"):
        r.config_set("maxmemory", "lots")
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("nosuch", "1")
    assert "maxmemory-policy" in r.config_get("*")
    assert "requirepass" not in r.config_get("*")


def test_config_get_shows_every_setting_of_the_model_that_redis_has(r):
    shown = r.config_get("*")
    assert set(redis_names().values()) <= set(shown)
    assert shown["slowlog-max-len"] == str(Config.model_fields["slowlog_max_len"].default)
    assert shown["appendonly"] == "no" and shown["logfile"].endswith("toy-redis.log")


def test_config_resetstat(r, toy):
    r.get("x")
    toy.client().ping()
    r.config_resetstat()
    stats = r.info("stats")
    assert stats["keyspace_misses"] == 0 and stats["total_connections_received"] == 0
    toy.client().ping()
    assert r.info("stats")["total_connections_received"] == 1


def info_layout(client: RawClient, section: str) -> dict[str, list[str]]:
    """Section title -> field names, of INFO <section>."""
    layout: dict[str, list[str]] = {}
    for line in client.call("INFO", section).decode().splitlines():
        if line.startswith("# "):
            current = layout.setdefault(line[2:], [])
        elif line:
            current.append(line.split(":", 1)[0])
    return layout


@pytest.mark.parametrize("section", ["everything", "all", "default", "memory"])
def test_info_has_every_section_and_field_redis_prints(toy, real_redis, section):
    expected, got = (info_layout(RawClient(port), section) for port in (real_redis.port, toy.port))
    assert list(got) == list(expected)
    for title, fields in expected.items():
        if title in ("Keyspace", "Commandstats", "Errorstats", "Latencystats"):
            continue  # one line per database, command or error seen
        assert got[title][: len(fields)] == fields, title


def test_client_list_has_redis_7_fields(toy, real_redis):
    fields = []
    for port in (real_redis.port, toy.port):
        client = RawClient(port)
        line = client.call("CLIENT", "INFO").decode().strip()
        fields.append([pair.split("=", 1)[0] for pair in line.split(" ")])
        assert "cmd=client|info" in line
        assert f"laddr=127.0.0.1:{port}" in line and " fd=-1 " not in line
        client.close()
    assert fields[1] == fields[0]


def test_client_kill_by_id_addr_and_old_form(toy, r):
    victims = [RawClient(toy.port) for _ in range(3)]
    ids = [victim.call("CLIENT", "ID") for victim in victims]
    addrs = [victim.call("CLIENT", "INFO").decode().split(" ")[1].split("=", 1)[1] for victim in victims]
    assert r.execute_command("CLIENT", "KILL", "ID", ids[0]) == 1
    assert r.execute_command("CLIENT", "KILL", "ADDR", addrs[1], "SKIPME", "yes") == 1
    assert r.execute_command("CLIENT", "KILL", addrs[2]) in (b"OK", "OK", True)
    for victim in victims:
        assert victim.read_until_closed() == b""
        victim.close()
    with pytest.raises(redis.ResponseError, match="No such client"):
        r.execute_command("CLIENT", "KILL", addrs[2])
    assert r.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 0
    me = RawClient(toy.port)
    assert me.call("CLIENT", "KILL", "ID", me.call("CLIENT", "ID"), "SKIPME", "no") == 1
    assert me.read_until_closed() == b""
    me.close()


def test_command_count_docs_and_info(r, toy):
    assert r.command_count() >= 50
    commands = r.command()
    assert commands["get"]["arity"] == 2 and commands["set"]["arity"] == -3
    client = RawClient(toy.port)
    docs = client.call("COMMAND", "DOCS", "get")
    assert docs[0] == b"get" and b"summary" in docs[1]
    info = client.call("COMMAND", "INFO", "get", "nosuch")
    assert info[0][:2] == [b"get", 2] and info[1] is None
    assert client.call("COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == [b"a", b"b"]
    client.close()


def test_slowlog(r):
    r.slowlog_reset()
    r.config_set("slowlog-log-slower-than", "0")
    try:
        r.set("slow", "x" * 300)
        entries = r.slowlog_get(10)
    finally:
        r.config_set("slowlog-log-slower-than", "10000")
    assert r.slowlog_len() >= 1
    entry = next(e for e in entries if e["command"].startswith(b"SET slow"))
    assert b"... (172 more bytes)" in entry["command"]
    r.slowlog_reset()
    assert r.slowlog_len() <= 1


def test_client_commands(r):
    client_id = r.client_id()
    r.client_setname("tester")
    assert r.client_getname() == "tester" or r.client_getname() == b"tester"
    listing = r.client_list()
    mine = next(c for c in listing if int(c["id"]) == client_id)
    assert mine["name"] == "tester" and mine["cmd"] == "client|list"
    assert r.client_info()["id"] == str(client_id) or int(r.client_info()["id"]) == client_id


def test_time(r):
    seconds, micros = r.time()
    assert abs(seconds - time.time()) < 5 and 0 <= micros < 1_000_000


def test_randomkey_and_scan(r):
    assert r.randomkey() is None
    names = {f"k{i}".encode() for i in range(1000)}
    r.mset({name: b"v" for name in names})
    assert r.randomkey() in names
    assert set(r.scan_iter(count=37)) == names
    assert set(r.scan_iter(match="k1*")) == {n for n in names if n.startswith(b"k1")}
    assert list(r.scan_iter(_type="hash")) == []


@pytest.fixture
def small_server(tmp_path):
    def start(*flags):
        server = ToyRedis(tmp_path, *flags).start()
        started.append(server)
        return server

    started = []
    yield start
    for server in started:
        server.stop()


def test_noeviction_refuses_writes_over_maxmemory(small_server):
    server = small_server("--maxmemory", "1000000", "--maxmemory-policy", "noeviction")
    client = server.client()
    with pytest.raises(redis.ResponseError, match=r"command not allowed when used memory > 'maxmemory'"):
        for i in range(10_000):
            client.set(f"k{i}", "x" * 200)
    assert client.get("k0") == b"x" * 200
    assert client.delete("k0") == 1


def test_allkeys_lru_evicts_least_recently_used(small_server):
    server = small_server("--maxmemory", "2000000", "--maxmemory-policy", "allkeys-lru")
    client = server.client()
    client.set("hot", "x" * 200)
    for i in range(20_000):
        client.set(f"k{i}", "x" * 200)
        if i % 100 == 0:
            client.get("hot")
    assert client.get("hot") is not None
    assert client.get("k0") is None
    assert client.info("stats")["evicted_keys"] > 0
    assert client.info("memory")["used_memory"] <= 2_000_000 + 1000


def test_volatile_ttl_evicts_nearest_expiry_first(small_server):
    server = small_server("--maxmemory", "1000000", "--maxmemory-policy", "volatile-ttl")
    client = server.client()
    client.set("keep", "x" * 200)
    for i in range(3000):
        client.set(f"t{i}", "x" * 200, ex=10_000 + i)
    assert client.get("keep") is not None
    assert client.get("t0") is None and client.get("t2999") is not None
    for i in range(3000):
        client.persist(f"t{i}")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(5000):
            client.set(f"p{i}", "x" * 200)


def test_scan_returns_every_key_present_throughout_despite_changes(r, toy):
    r.mset({f"k{i}": "v" for i in range(3000)})
    other = toy.client()
    seen, cursor, step = set(), 0, 0
    while True:
        cursor, keys = r.scan(cursor, count=100)
        seen.update(keys)
        step += 1
        # Meanwhile another client deletes, adds and starts its own scans.
        other.delete(f"k{2999 - step}")
        other.set(f"new{step}", "v")
        other.scan(0, count=10)
        if cursor == 0:
            break
    survivors = {f"k{i}".encode() for i in range(3000 - step - 1)}
    assert survivors <= seen
    other.close()


def test_concurrent_scans_share_bounded_snapshots():
    from toy_redis.keyspace import Keyspace

    db = Keyspace()
    for i in range(100):
        db.set(b"k%d" % i, b"v")
    cursors = [db.scan(0, 10)[0] for _ in range(50)]
    assert len(set(cursors)) == 1  # nothing added between them: one shared snapshot
    assert len(db._scans) == 1
    for i in range(10):
        db.set(b"n%d" % i, b"v")
        db.scan(0, 10)
    assert len(db._scans) <= 4


RUNTIME_INTEGERS = {field: name for field, name in redis_names(settable_only=True).items()
                    if Config.model_fields[field].annotation is int}


@pytest.mark.parametrize("field", RUNTIME_INTEGERS)
def test_config_set_takes_its_bounds_from_the_settings_model(r, field):
    name = RUNTIME_INTEGERS[field]
    low, high = bounds(field)
    before = r.config_get(name)[name]
    try:
        for value in (low, high):
            assert r.config_set(name, str(value))
            assert r.config_get(name) == {name: str(value)}
        # A memory value cannot be negative: "-1" is refused as text before any bound.
        for value in (high + 1,) if name in MEMORY_VALUES else (low - 1, high + 1):
            with pytest.raises(redis.ResponseError, match=f"argument must be between {low} and {high} inclusive"):
                r.config_set(name, str(value))
    finally:
        r.config_set(name, before)


def test_a_command_working_in_slices_is_timed_until_its_last_slice(r):
    """KEYS works in slices with other clients served between them; its latency (commandstats,
    the histogram behind the latency SLO, the slow log) is the whole time its client waits, not
    the moment it took to start. Walking 100k names takes milliseconds in any Python."""
    for start in range(0, 100_000, 10_000):
        r.mset({f"slice:{i}": "x" for i in range(start, start + 10_000)})
    r.config_set("slowlog-log-slower-than", "1000")
    assert len(r.keys("slice:*")) == 100_000
    # On a loaded machine any command may pass the 1 ms bar too: look for KEYS's own entry.
    logged = [entry for entry in r.slowlog_get(128) if entry["command"].startswith(b"KEYS")]
    assert len(logged) == 1 and logged[0]["duration"] >= 1000, logged
    stats = r.info("commandstats")["cmdstat_keys"]
    assert stats["calls"] == 1 and stats["usec"] >= 1000, stats
