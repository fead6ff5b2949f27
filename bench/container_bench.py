#!/usr/bin/env python3
"""The service images (issue 15): sizes, build times, and toy-redis in a container against toy-redis
run directly, measured in the same run.

1. Image sizes: whole image, and the service's own layer on top of the shared Debian base.
2. Build times in a fresh private dockerd: cold (empty engine: base import and every layer; the
   debootstrap tree and the wheels are cached on the control machine, as after a first build) and
   warm (same inputs again, layer cache).
3. redis-benchmark SET and GET against the same toy-redis wheels and config, once in its image
   with `docker run --network host --read-only` and once run directly the way a node's systemd
   runtime does (Debian's python3, a venv installed from the same wheels). Both servers run on one
   core and redis-benchmark (few clients) on the other (toy_redis_common.pin); each round measures
   both runtimes back to back, the first one alternating, and the target (container >= 0.95x
   direct) is judged on the median of the per-round ratios, printed with their quartiles. Beside it,
   the server's own CPU time per request in each runtime (median of the rounds): what the container
   itself costs, which the machine's load does not move the way it moves rps.

Run from the repo root as root: .venv/bin/python bench/container_bench.py [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docker.types import Mount

from homelab.containers import base, images
from homelab.containers.engine import private_engine
from roles import python_app
from roles import toy_redis as redis_role

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_redis_common import (  # noqa: E402
    CLIENT_CPU,
    PINNED_CLIENTS,
    SERVER_CPU,
    Server,
    answers_ping,
    free_port,
    pin,
    pinned_benchmark,
    process_cpu_seconds,
    ratio,
    ratio_verdict,
    rotated_rounds,
)

TARGET = 0.95
START_TIMEOUT_S = 30


def timed(action) -> tuple[float, object]:
    start = time.monotonic()
    result = action()
    return time.monotonic() - start, result


def cpu_per_request_us(pid: int, port: int, test: str, requests: int) -> tuple[float, float]:
    """redis-benchmark's rps, and the server's CPU microseconds per request meanwhile."""
    before = process_cpu_seconds(pid)
    rps = pinned_benchmark(port, test, requests)
    return rps, (process_cpu_seconds(pid) - before) / requests * 1e6


def server_files(workdir: Path, uid: int, gid: int) -> tuple[redis_role.Settings, dict[str, Path]]:
    """The role's config (no password: redis-benchmark would need it on its command line) and folders."""
    settings = redis_role.Settings(bind="127.0.0.1", port=free_port(), metrics_bind="127.0.0.1",
                                   metrics_port=free_port(), auth=False)
    workdir.mkdir()
    folders = {}
    for name in ("etc", "data", "log"):
        folders[name] = workdir / name
        folders[name].mkdir()
        os.chown(folders[name], uid, gid)
    (folders["etc"] / Path(redis_role.CONFIG_PATH).name).write_text(redis_role.render_config(settings))
    return settings, folders


def direct_config(settings: redis_role.Settings, folders: dict[str, Path]) -> Path:
    """The same config with the node's paths moved into ``folders`` (only the paths differ)."""
    text = redis_role.render_config(settings)
    text = text.replace(redis_role.LOG_FILE, str(folders["log"] / Path(redis_role.LOG_FILE).name))
    text = text.replace(redis_role.DATA_DIR, str(folders["data"]))
    path = folders["etc"] / "direct.yaml"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    # The machine is shared and noisy: more rounds make the median ratio steadier.
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    spec = images.specs()["toy-redis"]

    with private_engine() as engine, tempfile.TemporaryDirectory(prefix="container-bench-") as scratch:
        client = engine.client
        print("build times (s), fresh engine")
        built = {}
        for name, each in images.specs().items():
            cold, built[name] = timed(lambda: images.build(client, each, log=lambda line: None))
            warm, _ = timed(lambda: images.build(client, each, log=lambda line: None))
            print(f"  {name:<12} cold {cold:6.1f}   warm {warm:5.1f}")
        base_size = client.images.get(base.ensure_imported(client, base.ensure_tree())).attrs["Size"]
        print(f"image sizes (MiB): Debian base {base_size / 2**20:.1f}, shared")
        for name, image in built.items():
            print(f"  {name:<12} {image.attrs['Size'] / 2**20:6.1f}   service layer "
                  f"{(image.attrs['Size'] - base_size) / 2**20:5.1f}")

        workdir = Path(scratch)
        output = client.containers.run(spec.tag, entrypoint=["sh", "-c", "id -u; id -g"], network_mode="none",
                                       remove=True)
        uid, gid = (int(value) for value in output.decode().split())
        container_settings, container_folders = server_files(workdir / "container", uid, gid)
        direct_settings, direct_folders = server_files(workdir / "direct", os.getuid(), os.getgid())

        # The direct run uses this machine's Debian 12 python3, the image base's release too.
        wheel_set = python_app.build_wheels(spec.app.source_dir, images.wheel_target())
        venv = workdir / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "--no-index",
                        "--find-links", str(wheel_set.folder), spec.app.distribution], check=True)
        direct = Server("toy-redis run directly", [str(venv / "bin" / spec.app.service), "--config",
                                                   str(direct_config(direct_settings, direct_folders))],
                        direct_settings.port, workdir)
        container = client.containers.run(
            spec.tag, detach=True, network_mode="host", read_only=True,
            mounts=[Mount(redis_role.CONFIG_DIR, str(container_folders["etc"]), type="bind", read_only=True),
                    Mount(redis_role.DATA_DIR, str(container_folders["data"]), type="bind"),
                    Mount(redis_role.LOG_DIR, str(container_folders["log"]), type="bind")],
        )
        try:
            if not answers_ping(container_settings.port, START_TIMEOUT_S):
                sys.exit(f"bench: toy-redis in its container did not answer PING within {START_TIMEOUT_S} s")
            container.reload()
            container_pid = container.attrs["State"]["Pid"]  # the server's process, as the host sees it
            pin(direct.process.pid)
            pin(container_pid)
            print(f"redis-benchmark, {PINNED_CLIENTS} clients on core {CLIENT_CPU}, servers on core {SERVER_CPU}, "
                  f"{args.requests} requests per test, {args.rounds} rounds (rps: median; ratio: median and "
                  f"quartiles of the rounds' ratios; server CPU µs/request: median)")
            for test in ("SET", "GET"):
                runs = rotated_rounds({
                    "direct": lambda: cpu_per_request_us(direct.process.pid, direct_settings.port, test, args.requests),
                    "container": lambda: cpu_per_request_us(container_pid, container_settings.port, test, args.requests),
                }, args.rounds)
                rps = {name: [each[0] for each in values] for name, values in runs.items()}
                cpu = {name: statistics.median(each[1] for each in values) for name, values in runs.items()}
                print(f"  {test}: direct {statistics.median(rps['direct']):,.0f} rps, container "
                      f"{statistics.median(rps['container']):,.0f} rps: "
                      f"{ratio_verdict(rps['container'], rps['direct'], TARGET)}; server CPU direct "
                      f"{cpu['direct']:.1f} µs, container {cpu['container']:.1f} µs: "
                      f"{ratio(cpu['container'], cpu['direct'])}")
        finally:
            direct.stop()
            container.remove(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
