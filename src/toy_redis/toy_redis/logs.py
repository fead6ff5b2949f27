"""JSON-lines logs: one object per line with ts, level, event and the event's fields.

Written with the standard logging module to stderr or a file. The file is reopened on SIGHUP so
that logrotate can move it away. Records are written and flushed one by one: nothing is buffered.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LOGGER = logging.getLogger("toy_redis")


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup(log_file: str | None, level: str) -> logging.Handler:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    for old in list(LOGGER.handlers):
        LOGGER.removeHandler(old)
        old.close()
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    return handler


def reopen() -> None:
    """Reopen the log file (after logrotate moved it)."""
    for handler in LOGGER.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()


def log(level: int, event: str, **fields) -> None:
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, event, extra={"fields": fields})


def info(event: str, **fields) -> None:
    log(logging.INFO, event, **fields)


def warning(event: str, **fields) -> None:
    log(logging.WARNING, event, **fields)


def error(event: str, **fields) -> None:
    log(logging.ERROR, event, **fields)


def debug(event: str, **fields) -> None:
    log(logging.DEBUG, event, **fields)
