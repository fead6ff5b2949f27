"""INFO: Redis 7.0's sections and fields in Redis's order, with toy-redis's own values where it
has them and what an idle Redis reports (mostly 0) where it has nothing to report, so that tools
reading INFO find every field they expect. toy-redis adds a few of its own at the end of a
section (toy_redis_version, event_loop_lag_seconds, aof_current_size and aof_base_size)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from itertools import islice
from pathlib import Path

from . import __version__

# Captured from Debian's redis-server 7.0.15 (see the file's "about"): each section's fields in
# Redis's order, the sections INFO prints without arguments, and what an idle Redis prints for
# fields that are not 0 and toy-redis has no value for.
_CAPTURED = json.loads((Path(__file__).parent / "info_layout.json").read_text())
LAYOUT: dict[str, tuple[str, ...]] = {name: tuple(fields) for name, fields in _CAPTURED["sections"].items()}
DEFAULT_SECTIONS = tuple(_CAPTURED["default_sections"])
IDLE_VALUES: dict[str, str | int] = _CAPTURED["idle_values"]
TITLES = {"cpu": "CPU"}
# Keys sampled for avg_ttl (Redis estimates it from samples too).
AVG_TTL_SAMPLE = 1000
_page_size = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _page_size
    except OSError:
        return 0


def human_bytes(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def wanted_sections(arguments: list[str]) -> list[str]:
    """Redis 7.0's reading of INFO's arguments: none or `default`, `all`/`everything`, or names."""
    if not arguments or "default" in arguments:
        return list(DEFAULT_SECTIONS)
    if "all" in arguments or "everything" in arguments:
        return list(LAYOUT)
    return [name for name in LAYOUT if name in arguments]


def render(server, arguments: list[str]) -> str:
    out = []
    for name in wanted_sections(arguments):
        values = SECTIONS[name](server)
        fields = {field: values.pop(field, IDLE_VALUES.get(field, 0)) for field in LAYOUT[name]}
        fields.update(values)
        if out:
            out.append("")
        out.append("# " + TITLES.get(name, name.capitalize()))
        out.extend(f"{key}:{value}" for key, value in fields.items())
    return "\r\n".join(out) + "\r\n" if out else ""


def server_section(server) -> dict:
    uptime = int(time.time() - server.started_at)
    return {
        "redis_version": server.redis_version,
        "redis_mode": "standalone",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "arch_bits": 64,
        "multiplexing_api": "epoll",
        "process_id": os.getpid(),
        "run_id": server.run_id,
        "tcp_port": server.port,
        "server_time_usec": time.time_ns() // 1000,
        "uptime_in_seconds": uptime,
        "uptime_in_days": uptime // 86400,
        "hz": server.hz,
        "configured_hz": server.hz,
        "lru_clock": int(time.time()) & ((1 << 24) - 1),
        "executable": sys.argv[0],
        "config_file": server.config_file or "",
        "toy_redis_version": __version__,
    }


def clients_section(server) -> dict:
    return {"connected_clients": len(server.clients), "maxclients": server.maxclients}


def memory_section(server) -> dict:
    db = server.db
    rss = rss_bytes()
    return {
        "used_memory": db.used_memory,
        "used_memory_human": human_bytes(db.used_memory),
        "used_memory_rss": rss,
        "used_memory_rss_human": human_bytes(rss),
        "used_memory_dataset": db.used_memory,
        "total_system_memory": os.sysconf("SC_PHYS_PAGES") * _page_size,
        "total_system_memory_human": human_bytes(os.sysconf("SC_PHYS_PAGES") * _page_size),
        "maxmemory": server.maxmemory,
        "maxmemory_human": human_bytes(server.maxmemory),
        "maxmemory_policy": db.policy,
        "mem_allocator": "pymalloc",
        "lazyfree_pending_objects": sum(len(table) for table in db.garbage),
    }


def persistence_section(server) -> dict:
    aof = server.aof
    values = {
        "rdb_changes_since_last_save": server.dirty,
        "rdb_last_save_time": int(server.started_at),
        "aof_enabled": int(aof is not None),
    }
    if aof is not None:
        values.update({
            "aof_rewrite_in_progress": int(aof.rewrite_pid is not None),
            "aof_rewrites": aof.rewrites,
            "aof_last_bgrewrite_status": aof.last_rewrite_status,
            "aof_last_write_status": aof.last_write_status,
            "aof_current_size": aof.size,
            "aof_base_size": aof.base_size,
        })
    else:
        values.update({"aof_last_bgrewrite_status": "ok", "aof_last_write_status": "ok"})
    return values


def stats_section(server) -> dict:
    db = server.db
    return {
        "total_connections_received": server.total_connections,
        "total_commands_processed": server.total_commands,
        "instantaneous_ops_per_sec": server.ops_per_sec(),
        "total_net_input_bytes": server.net_input_bytes,
        "total_net_output_bytes": server.net_output_bytes,
        "rejected_connections": server.rejected_connections,
        "expired_keys": db.expired_keys,
        "expired_stale_perc": f"{db.expired_stale_ratio() * 100:.2f}",
        "evicted_keys": db.evicted_keys,
        "keyspace_hits": db.hits,
        "keyspace_misses": db.misses,
        "total_error_replies": sum(server.error_counts.values()),
        "event_loop_lag_seconds": f"{server.event_loop_lag:.6f}",
    }


def cpu_section(server) -> dict:
    usage = os.times()
    return {
        "used_cpu_sys": f"{usage.system:.6f}",
        "used_cpu_user": f"{usage.user:.6f}",
        "used_cpu_sys_children": f"{usage.children_system:.6f}",
        "used_cpu_user_children": f"{usage.children_user:.6f}",
        "used_cpu_sys_main_thread": f"{usage.system:.6f}",
        "used_cpu_user_main_thread": f"{usage.user:.6f}",
    }


def commandstats_section(server) -> dict:
    return {
        f"cmdstat_{c.name}": (
            f"calls={c.calls},usec={int(c.seconds_total * 1e6)},usec_per_call={c.seconds_total * 1e6 / c.calls:.2f},"
            f"rejected_calls=0,failed_calls={c.failed_calls}"
        )
        for c in server.commands.values() if c.calls
    }


def latencystats_section(server) -> dict:
    """p50/p99/p99.9 per command, each the upper bound of the latency bucket it falls in."""
    from .metrics import LATENCY_BUCKETS

    bounds = [bound * 1e6 for bound in LATENCY_BUCKETS] + [float("inf")]
    values = {}
    for c in server.commands.values():
        if not c.calls:
            continue
        shown = []
        for label, share in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
            cumulative = 0
            for bound, count in zip(bounds, c.latency_buckets):
                cumulative += count
                if cumulative >= share * c.calls:
                    break
            shown.append(f"{label}={bound:.3f}")
        values[f"latency_percentiles_usec_{c.name}"] = ",".join(shown)
    return values


def keyspace_section(server) -> dict:
    db = server.db
    if not len(db):
        return {}
    now = time.time() * 1000
    sample = list(islice(db.expires.values(), AVG_TTL_SAMPLE))
    avg_ttl = int(sum(max(0, when - now) for when in sample) / len(sample)) if sample else 0
    return {"db0": f"keys={len(db)},expires={len(db.expires)},avg_ttl={avg_ttl}"}


SECTIONS = {
    "server": server_section,
    "clients": clients_section,
    "memory": memory_section,
    "persistence": persistence_section,
    "stats": stats_section,
    "replication": lambda server: {"role": "master"},
    "cpu": cpu_section,
    "modules": lambda server: {},
    "commandstats": commandstats_section,
    "errorstats": lambda server: {f"errorstat_{kind}": f"count={count}" for kind, count in sorted(server.error_counts.items())},
    "latencystats": latencystats_section,
    "cluster": lambda server: {},
    "keyspace": keyspace_section,
}
