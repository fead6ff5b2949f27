"""TLS and logins for the relay's port, from an exporter-toolkit web config file.

With `web_config_file` set, the relay reads the file Prometheus's own exporters read
(exporter-toolkit's format, https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):

    tls_server_config: {cert_file: ..., key_file: ...}
    basic_auth_users: {prometheus: <bcrypt hash>, blackbox: <bcrypt hash>, ...}

It then serves TLS only (TLS 1.2 or later) with that certificate (reloaded for new connections when
its files change: service_kit.tls.ReloadingContext), and GET /metrics and /healthz
ask for one of those logins (service_kit.logins.Logins) (401 with a `WWW-Authenticate: Basic` challenge otherwise). The
webhooks keep their own credentials: Alertmanager's bearer token and FAX.PLUS's path token, since
a webhook sender presents one credential and those are already checked before any body is read.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from service_kit.logins import Logins, hashed_logins
from service_kit.tls import ReloadingContext

from alert_relay.config import ConfigFileError

KEY = "web_config_file"
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
    try:
        hashes = hashed_logins(users)
    except ValueError as exc:
        raise fail(str(exc)) from None
    context = ReloadingContext(tls["cert_file"], tls["key_file"], lambda: tls_context(tls, fail), ConfigFileError, log)
    return WebConfig(context, Logins(hashes))


def tls_context(tls: dict, fail) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.get("min_version") == "TLS13" else ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise fail(f"tls_server_config: cannot load cert_file and key_file "
                   f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc})") from None
    return context
