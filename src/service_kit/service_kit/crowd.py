"""Connections that have not proven a credential yet, by peer address, so that a server at its
connection limit makes room at the expense of the crowd, not of whoever came last.

A connection is unproven from its accept (its TLS handshake included) until it proves a credential:
toy-redis's AUTH or metrics login, the relay's webhook token or a login of its web_config_file.
A flood pushes out its own connections: the one to go is the oldest of the address holding the
most unproven connections (among equals, the oldest). A client that sends its credential as soon
as it connects (a scraper, a Redis client with AUTH, Alertmanager) holds one unproven connection
for a moment, so connections from other addresses, however many and however fast, cannot push it out.
"""

from __future__ import annotations

import time
from typing import Hashable


class Unproven:
    def __init__(self):
        # Peer address -> its unproven connections and when each came, oldest first.
        self.by_address: dict[str, dict[Hashable, float]] = {}
        self.count = 0

    def add(self, address: str, connection: Hashable) -> None:
        self.by_address.setdefault(address, {})[connection] = time.monotonic()
        self.count += 1

    def discard(self, address: str, connection: Hashable) -> bool:
        """Forget `connection` (proven, or gone); whether it was here."""
        mine = self.by_address.get(address)
        if not mine or mine.pop(connection, None) is None:
            return False
        self.count -= 1
        if not mine:
            del self.by_address[address]
        return True

    def push_out(self) -> tuple[str, Hashable] | None:
        """Forget and return (address, connection) of the one to make room with, or None if none is unproven."""
        if not self.by_address:
            return None
        address, mine = max(self.by_address.items(), key=lambda item: (len(item[1]), -next(iter(item[1].values()))))
        connection = next(iter(mine))
        self.discard(address, connection)
        return address, connection
