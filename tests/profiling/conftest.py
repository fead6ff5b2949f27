"""A real toy-redis with the planted hot spot and leak (planted/sitecustomize.py, the costs in
tests/planted), on loopback."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest
import redis

from tests.planted import pythonpath
from tests.toy_redis.conftest import ToyRedis

PLANTED = Path(__file__).parent / "planted"


@pytest.fixture
def planted_toy(tmp_path):
    toy = ToyRedis(tmp_path, env={"PYTHONPATH": pythonpath(PLANTED)}).start()
    yield toy
    toy.stop()


class Load:
    """A client calling one command over and over until stopped (the work a profile must see),
    ``pause`` seconds apart (a planted leak must not fill the machine's memory)."""

    def __init__(self, connect: Callable[[], redis.Redis], *command, pause: float = 0.0):
        self.pause = pause
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(connect, command), daemon=True)

    def _run(self, connect: Callable[[], redis.Redis], command: tuple) -> None:
        with connect() as client:
            while not self.stopped.wait(self.pause):
                client.execute_command(*command)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopped.set()
        self.thread.join(timeout=15)
