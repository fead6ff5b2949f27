"""Expiry: lazy on access, and an active cycle that reclaims keys and memory with no client traffic."""

from __future__ import annotations

import time

import requests
from toy_redis.keyspace import Keyspace, now_ms

from tests.loopback import wait_for

from .conftest import RawClient


def set_with_pxat(toy, names: list[str], value: str, lead_ms: int) -> int:
    """SET each name with the same PXAT, about lead_ms from now; the expiry time. If loading
    took longer than that (a loaded machine), the keys are flushed and loaded again with twice
    the lead, so that the test starts with all keys present."""
    client = RawClient(toy.port, timeout=60)
    while True:
        expire_at = now_ms() + lead_ms
        client.send(b"".join(client.command("SET", name, value, "PXAT", expire_at) for name in names))
        assert all(client.read() == b"OK" for _ in names)
        if now_ms() < expire_at - 1000:
            client.close()
            return expire_at
        client.call("FLUSHALL")
        lead_ms *= 2


def metric(toy, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{toy.metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_expired_key_is_gone_on_access(r):
    r.set("short", "v", px=50)
    assert r.get("short") == b"v"
    time.sleep(0.1)
    assert r.get("short") is None
    assert r.ttl("short") == -2
    assert r.exists("short") == 0


def test_mass_expiry_with_no_traffic_empties_the_database(r, toy):
    expire_at = set_with_pxat(toy, [f"key:{i}" for i in range(50_000)], "v" * 32, 3000)
    assert r.dbsize() == 50_000
    expired_before = metric(toy, "toy_redis_expired_keys_total")
    time.sleep(max(0, (expire_at - now_ms()) / 1000))
    # Nobody touches the keys: only the active cycle can bring the count down.
    wait_for(lambda: metric(toy, "toy_redis_keys") == 0, 3, "the active cycle to remove every key")
    assert r.dbsize() == 0
    assert metric(toy, "toy_redis_keys_with_ttl") == 0
    assert metric(toy, "toy_redis_expired_keys_total") - expired_before == 50_000
    assert metric(toy, "toy_redis_used_memory_bytes") == 0


def test_memory_comes_back_after_mass_expiry(r, toy):
    baseline = r.info("memory")["used_memory_rss"]
    expire_at = set_with_pxat(toy, [f"big:{i}" for i in range(100_000)], "x" * 1000, 4000)
    peak = r.info("memory")["used_memory_rss"]
    time.sleep(max(0, (expire_at - now_ms()) / 1000))
    assert peak - baseline > 80_000_000
    wait_for(lambda: r.dbsize() == 0, 3, "the active cycle to remove every key")
    wait_for(lambda: r.info("memory")["used_memory_rss"] < baseline + (peak - baseline) / 3, 3,
             f"RSS to fall from its peak {peak} towards the baseline {baseline}")


def test_keys_without_ttl_survive_the_cycle(r):
    r.set("forever", "1")
    r.set("brief", "1", px=100)
    time.sleep(0.4)
    assert r.dbsize() == 1
    assert r.get("forever") == b"1"


def test_changed_ttl_is_honoured_by_the_cycle(r):
    r.set("k", "v", px=100)
    r.pexpire("k", 60_000)
    r.set("p", "v", px=100)
    r.persist("p")
    time.sleep(0.4)
    assert r.get("k") == b"v" and r.get("p") == b"v"
    assert 50 < r.ttl("k") <= 60


def test_rewriting_a_ttl_does_not_grow_the_expiry_index():
    db = Keyspace()
    for i in range(200_000):
        db.set(b"same", b"v", now_ms() + 3_600_000 + i)
        if i % 1000 == 0:
            db.compact()
    db.compact()
    assert len(db.expires) == 1
    assert db._wheel_entries <= 2 * len(db.expires) + 10_000


def test_stale_ratio_reports_expiry_backlog():
    db = Keyspace()
    past = now_ms() - 1000
    for i in range(1000):
        db.set(b"k%d" % i, b"v", now_ms() + 60_000)
    for i in range(1000):
        db.set_expire(b"k%d" % i, past) if i < 250 else None
    assert abs(db.expired_stale_ratio() - 0.25) < 0.01
    while db.active_expire(1.0):
        pass
    assert len(db) == 750
    assert db.expired_stale_ratio() == 0.0
