"""Command line: `toy-redis [--config FILE] [flags]` runs the server; `--check-config FILE` checks a file.

Flags override the file. Any bad setting prints one line naming the file or flag, the key and
what was expected, and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import logs
from .config import (
    Config,
    ConfigError,
    check_listeners,
    check_paths,
    load_file,
    read_metrics_users,
    read_password,
    validate,
)
from .tls import reloading_context, server_context

EXIT_BAD_CONFIG = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"toy-redis: {message}\n")
        sys.exit(EXIT_BAD_CONFIG)


def flag_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="toy-redis", description="A Redis-compatible server with metrics and JSON logs.")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--check-config", metavar="FILE", help="check a settings file and exit (0 if valid, else 2)")
    parser.add_argument("--check-aof", metavar="FILE",
                        help="replay an append-only file and exit (0 if toy-redis would load it, 1 if damaged)")
    parser.add_argument("--fix", action="store_true",
                        help="with --check-aof: copy the file to FILE.bak-<time>, then cut it at the bad record")
    # One flag per setting, named after its YAML key (`_` as `-`); each overrides the file.
    for name, field in Config.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, choices=("yes", "no"), help=field.description)
        else:
            parser.add_argument(flag, dest=name, type=int if field.annotation is int else str, help=field.description)
    return parser


def build_config(args: argparse.Namespace) -> Config:
    source = args.config or "command line"
    config = load_file(args.config) if args.config else Config()
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "check_config", "check_aof", "fix") and value is not None
    }
    for key, value in overrides.items():
        if Config.model_fields[key].annotation is bool:
            value = value == "yes"
        try:
            config = validate({key: value}, "command line", config)
        except ConfigError as exc:
            # Blame the flag the user typed, not the file.
            raise ConfigError("command line", "--" + key.replace("_", "-"), exc.expected) from None
    check_paths(config, source)
    return config


def check_aof(path: str, fix: bool) -> int:
    """Replay the file as a start would; with fix, back it up and cut it at the bad record."""
    from .aof import repair, replay
    from .server import Server

    records, problem = replay(path, Server(Config()).replayer())
    if problem is None:
        print(f"{path}: ok, {records} records")
        return 0
    kind = "torn last record" if problem.torn else "bad record"
    found = f"{path}: {kind} at byte {problem.offset} ({problem.reason}) after {records} good records"
    if not fix:
        print(found + ("; toy-redis cuts it off when it starts" if problem.torn else
                       "; --fix backs the file up and cuts it there"))
        return 0 if problem.torn else 1
    backup = repair(path, problem)
    print(f"{found}; cut there, the file as it was is in {backup}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = flag_parser().parse_args(argv)
    if args.fix and not args.check_aof:
        print("toy-redis: --fix goes with --check-aof FILE", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.check_aof:
        return check_aof(args.check_aof, args.fix)
    if args.check_config:
        try:
            config = load_file(args.check_config)
            read_password(config, args.check_config)
            read_metrics_users(config, args.check_config)
            check_listeners(config, args.check_config)
            server_context(config, args.check_config)
            check_paths(config, args.check_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_BAD_CONFIG
        print(f"{args.check_config}: ok")
        return 0
    try:
        config = build_config(args)
        source = args.config or "command line"
        password = read_password(config, source)
        metrics_users = read_metrics_users(config, source)
        check_listeners(config, source)
        tls = reloading_context(config, source)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        logs.setup(config.log_file, config.log_level)
    except OSError as exc:
        print(f"{args.config or 'command line'}: log_file: cannot open {config.log_file} ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return run(config, args.config, password, tls, metrics_users)


def run(config: Config, config_file: str | None, password: bytes | None, tls=None, metrics_users=None) -> int:
    from pprof_sampler import SigprofTaken

    from .aof import AofDamaged
    from .server import Server

    try:
        import uvloop
    except ImportError:
        uvloop = None
    server = Server(config, config_file, password, tls, metrics_users)

    async def serve() -> None:
        await server.start()
        await server.stopped

    try:
        if uvloop is not None:
            uvloop.run(serve())
        else:
            asyncio.run(serve())
    except AofDamaged as exc:
        logs.error("aof_corrupt", error=str(exc))
        print(f"toy-redis: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        logs.error("start_failed", error=str(exc))
        print(f"toy-redis: cannot start: {exc}", file=sys.stderr)
        return 1
    except SigprofTaken as exc:
        logs.error("start_failed", error=str(exc))
        print(f"{config_file or 'command line'}: profiling_hz: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
