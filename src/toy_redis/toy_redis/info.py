"""INFO: Redis 7.0's sections and fields in Redis's order, with toy-redis's own values where it
has them and what an idle Redis reports (mostly 0) where it has nothing to report, so that tools
reading INFO find every field they expect. toy-redis adds a few of its own at the end of a
section (toy_redis_version, event_loop_lag_seconds, aof_current_size and aof_base_size)."""

from __future__ import annotations

import os
import platform
import sys
import time
from itertools import islice

from . import __version__

# Sections and fields as Debian's redis-server 7.0.15 prints them for INFO everything.
LAYOUT: dict[str, tuple[str, ...]] = {
    "server": (
        "redis_version", "redis_git_sha1", "redis_git_dirty", "redis_build_id", "redis_mode", "os", "arch_bits",
        "monotonic_clock", "multiplexing_api", "atomicvar_api", "gcc_version", "process_id", "process_supervised",
        "run_id", "tcp_port", "server_time_usec", "uptime_in_seconds", "uptime_in_days", "hz", "configured_hz",
        "lru_clock", "executable", "config_file", "io_threads_active",
    ),
    "clients": (
        "connected_clients", "cluster_connections", "maxclients", "client_recent_max_input_buffer",
        "client_recent_max_output_buffer", "blocked_clients", "tracking_clients", "clients_in_timeout_table",
    ),
    "memory": (
        "used_memory", "used_memory_human", "used_memory_rss", "used_memory_rss_human", "used_memory_peak",
        "used_memory_peak_human", "used_memory_peak_perc", "used_memory_overhead", "used_memory_startup",
        "used_memory_dataset", "used_memory_dataset_perc", "allocator_allocated", "allocator_active",
        "allocator_resident", "total_system_memory", "total_system_memory_human", "used_memory_lua",
        "used_memory_vm_eval", "used_memory_lua_human", "used_memory_scripts_eval", "number_of_cached_scripts",
        "number_of_functions", "number_of_libraries", "used_memory_vm_functions", "used_memory_vm_total",
        "used_memory_vm_total_human", "used_memory_functions", "used_memory_scripts", "used_memory_scripts_human",
        "maxmemory", "maxmemory_human", "maxmemory_policy", "allocator_frag_ratio", "allocator_frag_bytes",
        "allocator_rss_ratio", "allocator_rss_bytes", "rss_overhead_ratio", "rss_overhead_bytes",
        "mem_fragmentation_ratio", "mem_fragmentation_bytes", "mem_not_counted_for_evict", "mem_replication_backlog",
        "mem_total_replication_buffers", "mem_clients_slaves", "mem_clients_normal", "mem_cluster_links",
        "mem_aof_buffer", "mem_allocator", "active_defrag_running", "lazyfree_pending_objects", "lazyfreed_objects",
    ),
    "persistence": (
        "loading", "async_loading", "current_cow_peak", "current_cow_size", "current_cow_size_age",
        "current_fork_perc", "current_save_keys_processed", "current_save_keys_total", "rdb_changes_since_last_save",
        "rdb_bgsave_in_progress", "rdb_last_save_time", "rdb_last_bgsave_status", "rdb_last_bgsave_time_sec",
        "rdb_current_bgsave_time_sec", "rdb_saves", "rdb_last_cow_size", "rdb_last_load_keys_expired",
        "rdb_last_load_keys_loaded", "aof_enabled", "aof_rewrite_in_progress", "aof_rewrite_scheduled",
        "aof_last_rewrite_time_sec", "aof_current_rewrite_time_sec", "aof_last_bgrewrite_status", "aof_rewrites",
        "aof_rewrites_consecutive_failures", "aof_last_write_status", "aof_last_cow_size", "module_fork_in_progress",
        "module_fork_last_cow_size",
    ),
    "stats": (
        "total_connections_received", "total_commands_processed", "instantaneous_ops_per_sec",
        "total_net_input_bytes", "total_net_output_bytes", "total_net_repl_input_bytes",
        "total_net_repl_output_bytes", "instantaneous_input_kbps", "instantaneous_output_kbps",
        "instantaneous_input_repl_kbps", "instantaneous_output_repl_kbps", "rejected_connections", "sync_full",
        "sync_partial_ok", "sync_partial_err", "expired_keys", "expired_stale_perc", "expired_time_cap_reached_count",
        "expire_cycle_cpu_milliseconds", "evicted_keys", "evicted_clients", "total_eviction_exceeded_time",
        "current_eviction_exceeded_time", "keyspace_hits", "keyspace_misses", "pubsub_channels", "pubsub_patterns",
        "pubsubshard_channels", "latest_fork_usec", "total_forks", "migrate_cached_sockets",
        "slave_expires_tracked_keys", "active_defrag_hits", "active_defrag_misses", "active_defrag_key_hits",
        "active_defrag_key_misses", "total_active_defrag_time", "current_active_defrag_time", "tracking_total_keys",
        "tracking_total_items", "tracking_total_prefixes", "unexpected_error_replies", "total_error_replies",
        "dump_payload_sanitizations", "total_reads_processed", "total_writes_processed",
        "io_threaded_reads_processed", "io_threaded_writes_processed", "reply_buffer_shrinks", "reply_buffer_expands",
    ),
    "replication": (
        "role", "connected_slaves", "master_failover_state", "master_replid", "master_replid2", "master_repl_offset",
        "second_repl_offset", "repl_backlog_active", "repl_backlog_size", "repl_backlog_first_byte_offset",
        "repl_backlog_histlen",
    ),
    "cpu": (
        "used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children",
        "used_cpu_sys_main_thread", "used_cpu_user_main_thread",
    ),
    "modules": (),
    "commandstats": (),
    "errorstats": (),
    "latencystats": (),
    "cluster": ("cluster_enabled",),
    "keyspace": (),
}
DEFAULT_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
                    "errorstats", "cluster", "keyspace")
# What an idle Redis prints for fields that are not 0 and toy-redis has no value for.
IDLE_VALUES = {
    "redis_git_sha1": "00000000", "monotonic_clock": "POSIX clock_gettime", "atomicvar_api": "python",
    "gcc_version": "0.0.0", "process_supervised": "no", "used_memory_peak_perc": "0.00%",
    "used_memory_dataset_perc": "0.00%", "current_fork_perc": "0.00", "rdb_last_bgsave_status": "ok",
    "rdb_last_bgsave_time_sec": -1, "rdb_current_bgsave_time_sec": -1, "aof_last_rewrite_time_sec": -1,
    "aof_current_rewrite_time_sec": -1, "instantaneous_input_kbps": "0.00", "instantaneous_output_kbps": "0.00",
    "instantaneous_input_repl_kbps": "0.00", "instantaneous_output_repl_kbps": "0.00",
    "master_failover_state": "no-failover", "master_replid": "0" * 40, "master_replid2": "0" * 40,
    "second_repl_offset": -1, "used_memory_lua_human": "0B", "used_memory_vm_total_human": "0B",
    "used_memory_scripts_human": "0B", "allocator_frag_ratio": "1.00", "allocator_rss_ratio": "1.00",
    "rss_overhead_ratio": "1.00", "mem_fragmentation_ratio": "1.00",
}
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
