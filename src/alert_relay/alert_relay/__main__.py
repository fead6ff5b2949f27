"""alert-relay: `alert-relay --config FILE` runs the relay; `--check-config FILE` validates and exits.

Exit status: 0 on SIGTERM or a valid config, 2 for a config or queue file problem (one line on stderr naming the
file and key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from alert_relay import metrics
from alert_relay.checks import check_faxplus, check_slack
from alert_relay.config import ConfigFileError, RelayConfig, fit_open_file_limit, load_yaml_model, read_secret
from alert_relay.routes import SlackRoutes, load_routes
from alert_relay.server import Intake, RelayServer
from alert_relay.slack import Slack
from alert_relay.store import QueueError, Store, check_queue, describe_error
from alert_relay.web import WebConfig, load_web_config
from alert_relay.worker import Worker
from pprof_sampler import SigprofTaken

log = logging.getLogger("alert_relay")

TOKEN_KEYS = ("slack_token_file", "faxplus_token_file", "alertmanager_token_file", "fax_webhook_token_file")


class JsonLines(logging.Formatter):
    """{ts, level, event, ...fields} per line, for journald and Loki."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


@dataclass(frozen=True)
class Loaded:
    config: RelayConfig
    routes: SlackRoutes
    tokens: dict[str, str]
    web: WebConfig | None = None


def load(config_path: str) -> Loaded:
    """Config, routes and token files, all checked; any problem is one ConfigFileError line."""
    config = load_yaml_model(config_path, RelayConfig)
    routes = load_routes(config.routes_file)
    tokens = {key: read_secret(config_path, key, getattr(config, key)) for key in TOKEN_KEYS}
    queue_dir = Path(config.queue_path).parent
    if not queue_dir.is_dir():
        raise ConfigFileError(config_path, "queue_path", f"expected a file in an existing directory ({queue_dir} is missing)")
    try:
        check_queue(config.queue_path)
    except QueueError as exc:
        raise ConfigFileError(config_path, "queue_path", str(exc)) from None
    web = load_web_config(config_path, config.web_config_file) if config.web_config_file else None
    return Loaded(config, routes, tokens, web)


def run(config_path: str, loaded: Loaded) -> int:
    config = loaded.config
    try:
        fit_open_file_limit(config_path, config)
        store = Store(config.queue_path)
    except QueueError as exc:
        raise ConfigFileError(config_path, "queue_path", str(exc)) from None
    metrics.watch(store)
    slack = Slack(
        store, loaded.tokens["slack_token_file"], config.slack_base_url,
        loaded.tokens["faxplus_token_file"], config.faxplus_base_url, config.alertmanager_url,
        # While Slack refuses the token, the worker re-reads the file: fixing it resumes delivery.
        token_source=lambda: read_secret(config.slack_token_file, "slack_token_file", config.slack_token_file),
    )
    worker = Worker(store, slack, max_attempts=config.max_attempts, retry_initial_s=config.retry_initial_s,
                    retry_max_s=config.retry_max_s, channel_interval_s=config.channel_interval_s)
    intake = Intake(
        store=store, routes=loaded.routes, on_queued=worker.notify, worker_problem=worker.problem,
        alertmanager_token=loaded.tokens["alertmanager_token_file"], fax_token=loaded.tokens["fax_webhook_token_file"],
    )
    worker.start()
    try:
        asyncio.run(serve(RelayServer(config, intake, loaded.web), config, store))
    except SigprofTaken as exc:
        raise ConfigFileError(config_path, "profiling_hz", str(exc)) from None
    finally:
        worker.stop()
        worker.join(timeout=20)  # an in-flight Slack call finishes (or times out) before exit
    log.info("stopped", extra={"fields": {"queued": store.queue_depth()}})
    return 0


async def serve(server: RelayServer, config: RelayConfig, store: Store) -> None:
    """Listen until SIGTERM or SIGINT, then let the requests under way finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda signum=signum: (
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}}), stop.set()))
    host, port = await server.start(*config.listen_address)
    log.info("listening", extra={"fields": {"address": host, "port": port, "tls": server.web is not None,
                                            "queued": store.queue_depth(),
                                            "dead_letters": store.dead_letter_count()}})
    await stop.wait()
    await server.stop()


# Jobs on a deployment's config instead of running the relay: each needs --config, then exits.
WITH_CONFIG = {
    "--requeue-dead-letters": "move the dead letters back to the queue (after fixing their cause)",
    "--check-slack": "ask Slack whether the token, its scopes and every routed channel work",
    "--check-faxplus": "ask FAX.PLUS whether the token may read the account and fax files",
}


def parse_flags(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alert-relay", description="Alertmanager alerts and FAX.PLUS faxes to Slack")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="FILE", help="run the relay with this config")
    group.add_argument("--check-config", metavar="FILE", help="check the config, its routes and token files, then exit")
    group.add_argument("--check-routes", metavar="FILE", help="check a routes file (alerts/routes.yaml format), then exit")
    for flag, job in WITH_CONFIG.items():
        parser.add_argument(flag, action="store_true", help=f"with --config: {job}, then exit")
    args = parser.parse_args(argv)
    for flag in WITH_CONFIG:
        if getattr(args, flag.removeprefix("--").replace("-", "_")) and not args.config:
            parser.error(f"{flag} needs --config")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_flags(argv)

    try:
        if args.check_routes:
            load_routes(args.check_routes)
            return 0
        loaded = load(args.check_config or args.config)
    except ConfigFileError as exc:
        print(f"alert-relay: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        return 0
    if args.check_slack or args.check_faxplus:
        # One line per problem on stdout; exit 1 if there is any.
        problems = []
        if args.check_slack:
            problems += check_slack(loaded.tokens["slack_token_file"], loaded.config.slack_base_url, loaded.routes)
        if args.check_faxplus:
            problems += check_faxplus(loaded.tokens["faxplus_token_file"], loaded.config.faxplus_base_url)
        print("\n".join(problems) or "ok")
        return 1 if problems else 0
    if args.requeue_dead_letters:
        # Safe while the relay runs (SQLite serializes writers); it picks them up within a minute.
        try:
            letters = Store(loaded.config.queue_path).requeue_dead_letters()
        except QueueError as exc:
            print(f"alert-relay: {exc}", file=sys.stderr)
            return 2
        except sqlite3.Error as exc:
            print(f"alert-relay: {loaded.config.queue_path}: {describe_error(exc)}", file=sys.stderr)
            return 2
        for letter in letters:
            print(json.dumps({"event": "requeued", **letter}))
        return 0

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=loaded.config.log_level.upper(), handlers=[handler])
    logging.getLogger("slack_sdk").setLevel(logging.WARNING)  # its debug logs print request bodies
    try:
        return run(args.config, loaded)
    except ConfigFileError as exc:
        print(f"alert-relay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
