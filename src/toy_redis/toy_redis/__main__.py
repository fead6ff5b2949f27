"""Command line: `toy-redis [--config FILE] [flags]` runs the server; `--check-config FILE` checks a file.

Flags override the file. Any bad setting prints one line naming the file or flag, the key and
what was expected, and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import logs
from .config import Config, ConfigError, check_paths, load_file, read_password, validate

EXIT_BAD_CONFIG = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"toy-redis: {message}\n")
        sys.exit(EXIT_BAD_CONFIG)


def flag_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="toy-redis", description="A Redis-compatible server with metrics and JSON logs.")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--check-config", metavar="FILE", help="check a settings file and exit (0 if valid, else 2)")
    # Flags named after the YAML keys; each overrides the file.
    parser.add_argument("--bind")
    parser.add_argument("--port", type=int)
    parser.add_argument("--requirepass-file", dest="requirepass_file")
    parser.add_argument("--maxclients", type=int)
    parser.add_argument("--maxmemory", type=int, help="bytes, 0 for no limit")
    parser.add_argument("--maxmemory-policy", dest="maxmemory_policy")
    parser.add_argument("--appendonly", choices=("yes", "no"))
    parser.add_argument("--appendfsync")
    parser.add_argument("--dir")
    parser.add_argument("--metrics-bind", dest="metrics_bind")
    parser.add_argument("--metrics-port", dest="metrics_port", type=int)
    parser.add_argument("--log-file", dest="log_file")
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--slowlog-log-slower-than-us", dest="slowlog_log_slower_than_us", type=int)
    parser.add_argument("--slowlog-max-len", dest="slowlog_max_len", type=int)
    return parser


def build_config(args: argparse.Namespace) -> Config:
    source = args.config or "command line"
    config = load_file(args.config) if args.config else Config()
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "check_config") and value is not None
    }
    if "appendonly" in overrides:
        overrides["appendonly"] = overrides["appendonly"] == "yes"
    for key, value in overrides.items():
        try:
            config = validate({key: value}, "command line", config)
        except ConfigError as exc:
            # Blame the flag the user typed, not the file.
            raise ConfigError("command line", "--" + key.replace("_", "-"), exc.expected) from None
    config = read_password(config, source)
    check_paths(config, source)
    return config


def main(argv: list[str] | None = None) -> int:
    args = flag_parser().parse_args(argv)
    if args.check_config:
        try:
            config = load_file(args.check_config)
            read_password(config, args.check_config)
            check_paths(config, args.check_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_BAD_CONFIG
        print(f"{args.check_config}: ok")
        return 0
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        logs.setup(config.log_file, config.log_level)
    except OSError as exc:
        print(f"{args.config or 'command line'}: log_file: cannot open {config.log_file} ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return run(config, args.config)


def run(config: Config, config_file: str | None) -> int:
    from .aof import AofCorrupt
    from .server import Server

    try:
        import uvloop
    except ImportError:
        uvloop = None
    server = Server(config, config_file)

    async def serve() -> None:
        await server.start()
        await server.stopped

    try:
        if uvloop is not None:
            uvloop.run(serve())
        else:
            asyncio.run(serve())
    except AofCorrupt as exc:
        logs.error("aof_corrupt", error=str(exc))
        print(f"toy-redis: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        logs.error("start_failed", error=str(exc))
        print(f"toy-redis: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
