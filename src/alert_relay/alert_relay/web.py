"""TLS and logins for the relay's port, from an exporter-toolkit web config file.

With `web_config_file` set, the relay reads the file Prometheus's own exporters read
(exporter-toolkit's format, https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):

    tls_server_config: {cert_file: ..., key_file: ...}
    basic_auth_users: {prometheus: <bcrypt hash>, blackbox: <bcrypt hash>, ...}

It then serves TLS only (TLS 1.2 or later) with that certificate (reloaded for new connections when
its files change: ReloadingContext), and GET /metrics and /healthz
ask for one of those logins (401 with a `WWW-Authenticate: Basic` challenge otherwise). The
webhooks keep their own credentials: Alertmanager's bearer token and FAX.PLUS's path token, since
a webhook sender presents one credential and those are already checked before any body is read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alert_relay.config import ConfigFileError

KEY = "web_config_file"
BCRYPT_HASH = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
# exporter-toolkit's keys this reads; any other key is refused rather than silently ignored.
KNOWN = {"tls_server_config": {"cert_file", "key_file", "min_version"}, "basic_auth_users": None}
log = logging.getLogger("alert_relay")


@dataclass
class WebConfig:
    tls: ReloadingContext
    logins: Logins = field(repr=False)


def load_web_config(config_path: str | Path, path: str) -> WebConfig:
    """The TLS context and logins of ``path``; any problem is one ConfigFileError naming it."""

    def fail(expected: str) -> ConfigFileError:
        return ConfigFileError(config_path, KEY, f"{path}: {expected}")

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise fail("not valid YAML") from None
    if not isinstance(data, dict) or set(data) - set(KNOWN):
        raise fail(f"expected exporter-toolkit's web config with only {', '.join(KNOWN)}")
    tls = data.get("tls_server_config")
    if not isinstance(tls, dict) or not {"cert_file", "key_file"} <= set(tls) or set(tls) - KNOWN["tls_server_config"]:
        raise fail("tls_server_config: expected cert_file and key_file")
    if tls.get("min_version", "TLS12") not in ("TLS12", "TLS13"):
        raise fail("tls_server_config: min_version: expected TLS12 or TLS13")
    users = data.get("basic_auth_users")
    if not isinstance(users, dict) or not users:
        raise fail("basic_auth_users: expected a mapping of user names to bcrypt hashes")
    for name, hashed in users.items():
        if not isinstance(name, str) or not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise fail(f"basic_auth_users: {name}: expected a bcrypt hash such as $2y$10$...")
    context = tls_context(tls, fail)
    return WebConfig(ReloadingContext(tls, fail, context),
                     Logins({name: hashed.encode() for name, hashed in users.items()}))


def tls_context(tls: dict, fail) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.get("min_version") == "TLS13" else ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise fail(f"tls_server_config: cannot load cert_file and key_file "
                   f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc})") from None
    return context


class ReloadingContext:
    """The TLS context of tls_server_config, made anew when its cert_file or key_file changed on
    disk, as exporter-toolkit rereads them: a deploy rotating the node's certificate (roles/pki)
    replaces both, and new handshakes then present the new certificate without a restart (which
    would drop queued webhooks' connections and miss a scrape); open connections keep theirs.

    Each new connection compares the files' stat with the loaded ones' (two stat calls, small beside
    a handshake). A pair that cannot be loaded (the new key in place, its certificate not yet) leaves
    the context in use and is logged once; the next change of either file is tried."""

    def __init__(self, tls: dict, fail, context: ssl.SSLContext):
        self.tls, self.fail, self.context = tls, fail, context
        self.stamp = self._stamp()

    def _stamp(self) -> tuple:
        stamps = []
        for path in (self.tls["cert_file"], self.tls["key_file"]):
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    def current(self) -> ssl.SSLContext:
        stamp = self._stamp()
        if stamp != self.stamp:
            # Stamped before reading: a file replaced meanwhile is read again at the next connection.
            self.stamp = stamp
            try:
                self.context = tls_context(self.tls, self.fail)
            except ConfigFileError as exc:
                log.warning("tls_reload_failed", extra={"fields": {"error": str(exc)}})
            else:
                log.info("tls_reloaded", extra={"fields": {"cert_file": self.tls["cert_file"]}})
        return self.context


class Logins:
    """HTTP basic auth against bcrypt hashes, as exporter-toolkit checks `basic_auth_users`: a
    login that matched once is remembered (a scrape costs no bcrypt; at most one entry per user),
    an unknown user costs as much as a wrong password, and hashes are checked one at a time in a
    thread of their own, so wrong passwords cannot take the threads that queue webhooks.

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
        """Whether the header's login matched before (no bcrypt needed)."""
        credentials = basic_credentials(authorization)
        return credentials is not None and self.verified.get(credentials[0]) == hashlib.sha256(credentials[1]).digest()

    async def allow(self, authorization: bytes | None, address: str) -> bool:
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
