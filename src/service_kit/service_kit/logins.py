"""HTTP basic auth against bcrypt hashes, as Prometheus's exporter-toolkit checks `basic_auth_users`
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md): toy-redis's
metrics logins (metrics_users_file) and the relay's (web_config_file) are such files."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

BCRYPT_HASH = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")


def hashed_logins(users: dict) -> dict[str, bytes]:
    """`basic_auth_users` (name: bcrypt hash) as Logins takes it; a ValueError names the first entry
    that is not a bcrypt hash."""
    for name, hashed in users.items():
        if not isinstance(name, str) or not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise ValueError(f"basic_auth_users: {name}: expected a bcrypt hash such as $2y$10$...")
    return {name: hashed.encode() for name, hashed in users.items()}


class Logins:
    """A login that matched once is remembered (a scrape costs no bcrypt; at most one entry per
    user, since only right passwords are), an unknown user costs as much as a wrong password, and
    hashes are checked one at a time in a thread of their own, so wrong passwords can neither stall
    the event loop nor take both cores or the threads that do the service's work.

    Checks take turns by peer address: an address has at most one check queued for the thread,
    its other logins wait for its turn, so a first login waits behind at most one check per
    other address, not behind every guess a flood sends. A check whose connection is gone is
    cancelled (``allow`` is awaited by the connection's task): it leaves the turn, and a check
    not yet started is never run."""

    def __init__(self, users: dict[str, bytes]):
        self.users = users
        self.verified: dict[str, bytes] = {}
        # Peer address -> [its turn, logins waiting for it]; dropped when none wait.
        self.turns: dict[str, list] = {}
        self.checker = ThreadPoolExecutor(1, thread_name_prefix="logins")
        # Compared against for unknown users, so that they take as long as known ones.
        self.decoy = next(iter(users.values()))

    def remembered(self, authorization: bytes | None) -> bool:
        """Whether the `Authorization` header value's login matched before (no bcrypt needed)."""
        credentials = basic_credentials(authorization)
        return credentials is not None and self.verified.get(credentials[0]) == hashlib.sha256(credentials[1]).digest()

    async def allow(self, authorization: bytes | None, address: str) -> bool:
        """Whether the `Authorization` header value (None when the request had none) sent from
        ``address`` holds one of the logins."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            return False
        if self.remembered(authorization):
            return True
        user, password = credentials
        hashed = self.users.get(user)
        turn = self.turns.setdefault(address, [asyncio.Lock(), 0])
        turn[1] += 1
        try:
            async with turn[0]:
                import bcrypt

                matches = await asyncio.get_running_loop().run_in_executor(
                    self.checker, bcrypt.checkpw, password, hashed or self.decoy)
        finally:
            turn[1] -= 1
            if not turn[1]:
                del self.turns[address]
        if matches and hashed is not None:
            self.verified[user] = hashlib.sha256(password).digest()
            return True
        return False

    def pending(self) -> int:
        """Logins waiting for a check or being checked."""
        return sum(waiting for _turn, waiting in self.turns.values())

    def close(self) -> None:
        self.checker.shutdown(wait=False, cancel_futures=True)


def basic_credentials(authorization: bytes | None) -> tuple[str, bytes] | None:
    """(user, password) of an `Authorization: Basic` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, colon, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    if not colon:
        return None
    return user.decode(errors="replace"), password
