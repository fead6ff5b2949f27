"""toy-redis's settings: one model holding each setting's name, type, bounds, default, meaning
and, for those a running server can change, its CONFIG SET name. The YAML loader, the
command-line flags (__main__), CONFIG GET/SET (runtime_config), the deploy role's settings
(roles/toy_redis extends Tuning) and the tests' value strategies are all derived from it, so a
bound changes with one edit.

A bad value stops the server before it starts with one line naming the file (or flag) and key and
what was expected, e.g. ``/etc/toy-redis.yaml: maxmemory_policy: expected one of noeviction,
allkeys-lru, volatile-ttl, got 'lru'``.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pprof_sampler import MAX_HZ as MAX_PROFILING_HZ
from pydantic import BaseModel, Field, ValidationError, field_validator
from service_kit.logins import hashed_logins

# A scraper needs one connection at a time. At most this many connections are held on the metrics
# port (so a flood can not take the descriptors the Redis clients need: the role reserves these);
# past it, a new connection pushes out one that has not proven a login (toy_redis.metrics.Slots).
# Here rather than in toy_redis.metrics so that the deploy reads it without loading prometheus_client.
METRICS_MAX_CONNECTIONS = 8
POLICIES = ("noeviction", "allkeys-lru", "volatile-ttl")
FSYNC_MODES = ("always", "everysec", "no")
LOG_LEVELS = ("debug", "info", "warning", "error")
EXPECTED_ADDRESS = "expected an IP address such as 0.0.0.0 or 127.0.0.1"


class ConfigError(Exception):
    """One line: where (file or flag), key, and what was expected."""

    def __init__(self, source: str, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        super().__init__(f"{source}: {key}: {expected}" if key else f"{source}: {expected}")


def redis(name: str, settable: bool = False) -> dict:
    """Field metadata: CONFIG GET shows this setting under Redis's name `name`; `settable`: CONFIG SET
    may change it on a running server."""
    return {"redis": name, "config_set": settable}


def redis_names(settable_only: bool = False) -> dict[str, str]:
    """Setting -> its Redis name, for every setting CONFIG GET shows (or only those CONFIG SET may change)."""
    names = {}
    for name, field in Config.model_fields.items():
        extra = field.json_schema_extra or {}
        if "redis" in extra and (extra["config_set"] or not settable_only):
            names[name] = extra["redis"]
    return names


class Tuning(BaseModel):
    """What a deployment chooses: every setting but the paths the deploy itself owns."""

    model_config = {"extra": "forbid", "strict": True, "frozen": True}

    bind: str = Field("127.0.0.1", description="address of the RESP listener", json_schema_extra=redis("bind"))
    # 0 turns a listener off, as in Redis (`port 0` with `tls-port 6379` serves TLS only).
    port: int = Field(6379, ge=0, le=65535, description="RESP port; 0: no plain listener", json_schema_extra=redis("port"))
    tls_port: int = Field(0, ge=0, le=65535, description="RESP-over-TLS port; 0: no TLS (the metrics then serve plain HTTP)",
                          json_schema_extra=redis("tls-port"))
    tls_auth_clients: Literal["yes", "no", "optional"] = Field(
        "yes", description="whether TLS clients must present a certificate the CA signed (Redis's tls-auth-clients)",
        json_schema_extra=redis("tls-auth-clients"))
    maxclients: int = Field(10000, ge=1, le=1_000_000, description="more connections get an error",
                            json_schema_extra=redis("maxclients", settable=True))
    # Redis's `timeout` (0..INT_MAX as in its config.c): a client that sends nothing for this long is closed.
    timeout: int = Field(0, ge=0, le=2**31 - 1, description="seconds a client may stay idle; 0 = forever",
                         json_schema_extra=redis("timeout", settable=True))
    # Not Redis's: while a password is required, a connection that has not authenticated within this
    # is closed, so that idle strangers cannot hold every client slot (Redis's `timeout` is 0 by
    # default, and a client that knows the password authenticates at once).
    # It bounds TLS handshakes too.
    auth_timeout: int = Field(10, ge=1, le=3600,
                              description="seconds a client may take to authenticate (its TLS handshake included)")
    maxmemory: int = Field(0, ge=0, le=2**63 - 1, description="bytes of dataset; 0 = no limit",
                           json_schema_extra=redis("maxmemory", settable=True))
    maxmemory_policy: Literal["noeviction", "allkeys-lru", "volatile-ttl"] = Field(
        "noeviction", description="what a write over maxmemory does",
        json_schema_extra=redis("maxmemory-policy", settable=True))
    appendonly: bool = Field(False, description="log every change to dir/appendonly.aof",
                             json_schema_extra=redis("appendonly"))
    appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec", description="when the append-only file is fsynced",
        json_schema_extra=redis("appendfsync", settable=True))
    metrics_bind: str = Field("127.0.0.1", description="address of the Prometheus /metrics endpoint")
    metrics_port: int = Field(8080, ge=0, le=65535, description="port of the /metrics endpoint")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="least level logged")
    # Continuous profiling (pprof_sampler): served at /debug/pprof/profile on the metrics port, for
    # Grafana Alloy's pyroscope.scrape; only behind the metrics login (read_metrics_users).
    profiling_hz: int = Field(0, ge=0, le=MAX_PROFILING_HZ,
                              description="CPU samples a second for GET /debug/pprof/profile on the metrics port; 0 = off")
    slowlog_log_slower_than_us: int = Field(
        10000, ge=-1, le=2**63 - 1, description="commands slower than this (us) are logged; -1: none",
        json_schema_extra=redis("slowlog-log-slower-than", settable=True))
    slowlog_max_len: int = Field(128, ge=0, le=1_000_000, description="entries SLOWLOG keeps",
                                 json_schema_extra=redis("slowlog-max-len", settable=True))

    @field_validator("tls_auth_clients", mode="before")
    @classmethod
    def _yes_no(cls, value):
        # YAML reads a bare yes/no as a boolean: take it as the word Redis uses.
        return {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("bind", "metrics_bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(EXPECTED_ADDRESS) from None
        return value


class Config(Tuning):
    """The server's config file (`toy-redis --config FILE`)."""

    # The password is read from this file (mode 0600/0640), never from the YAML or a flag.
    requirepass_file: str | None = Field(None, min_length=1, description="file with the password on its first line")
    # The node's certificate (with its chain) and key, and the CA clients' certificates must chain to.
    tls_cert_file: str | None = Field(None, min_length=1, description="PEM certificate the TLS listeners present",
                                      json_schema_extra=redis("tls-cert-file"))
    tls_key_file: str | None = Field(None, min_length=1, description="PEM private key of tls_cert_file (mode 0600/0640)",
                                     json_schema_extra=redis("tls-key-file"))
    tls_ca_cert_file: str | None = Field(None, min_length=1,
                                         description="PEM CA certificate(s) client certificates are checked against",
                                         json_schema_extra=redis("tls-ca-cert-file"))
    # Logins the metrics endpoint asks for: `basic_auth_users: {name: bcrypt hash}`, the key and
    # format of Prometheus's exporter-toolkit web config, so one hashed password serves both.
    metrics_users_file: str | None = Field(None, min_length=1, description="YAML file of basic_auth_users: name: bcrypt hash")
    dir: str = Field(".", min_length=1, description="folder of the append-only file", json_schema_extra=redis("dir"))
    log_file: str | None = Field(None, min_length=1, description="JSON-lines log file (stderr if unset)",
                                  json_schema_extra=redis("logfile"))


def choices(name: str) -> tuple | None:
    """The values a Literal setting takes, else None."""
    annotation = Config.model_fields[name].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def bounds(name: str) -> tuple[int, int]:
    """(lowest, highest) of an integer setting."""
    low = high = None
    for constraint in Config.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


def expected(name: str, given: Any) -> str:
    """What a setting expects, in words, for a value it refused."""
    shown = repr(given) if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    annotation = Config.model_fields[name].annotation
    if choices(name):
        return f"expected one of {', '.join(choices(name))}, got {shown}"
    if annotation is int:
        low, high = bounds(name)
        return f"expected an integer in {low}..{high}, got {shown}"
    if annotation is bool:
        return f"expected true or false, got {shown}"
    if name in ("bind", "metrics_bind"):
        return f"expected an IP address, got {shown}"
    return f"expected a {'directory' if name == 'dir' else 'file'} path, got {shown}"


def validate(values: dict[str, Any], source: str, base: Config | None = None) -> Config:
    """base (or the defaults) with `values` applied, checked. Raises ConfigError."""
    try:
        return Config.model_validate({**(base.model_dump() if base else {}), **values})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            raise ConfigError(source, key, "unknown key") from None
        raise ConfigError(source, key, expected(key, error.get("input"))) from None


def load_file(path: str) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"invalid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping of settings, got {type(data).__name__}")
    return validate(data, path)


def read_password(config: Config, source: str) -> bytes | None:
    """The password: the first line of requirepass_file (newline stripped), or None."""
    if config.requirepass_file is None:
        return None
    path = config.requirepass_file
    try:
        with open(path, "rb") as handle:
            password = handle.read().split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as exc:
        raise ConfigError(source, "requirepass_file", f"cannot read {path} ({exc.strerror})") from None
    if not password:
        raise ConfigError(source, "requirepass_file", f"{path} is empty: expected the password on its first line")
    return password


def read_metrics_users(config: Config, source: str) -> dict[str, bytes] | None:
    """The metrics endpoint's logins from metrics_users_file (name -> bcrypt hash), or None."""
    path = config.metrics_users_file
    if path is None:
        if config.profiling_hz:
            raise ConfigError(source, "profiling_hz", f"expected 0 without metrics_users_file (CPU profiles are "
                              f"served only behind the metrics login), got {config.profiling_hz}")
        return None
    key = "metrics_users_file"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {path} ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(source, key, f"{path} is not valid YAML") from None
    users = data.get("basic_auth_users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not users:
        raise ConfigError(source, key, f"expected {path} to hold basic_auth_users: a mapping of user names to bcrypt hashes")
    try:
        return hashed_logins(users)
    except ValueError as exc:
        raise ConfigError(source, key, f"{path}: {exc}") from None


def check_listeners(config: Config, source: str) -> None:
    """What Redis refuses at start: nothing to listen on, TLS without its files."""
    if not config.port and not config.tls_port:
        raise ConfigError(source, "port", "expected a port, or a tls_port, to listen on (both are 0)")
    if config.tls_port:
        for key in ("tls_cert_file", "tls_key_file"):
            if getattr(config, key) is None:
                raise ConfigError(source, key, f"expected a file path: tls_port is {config.tls_port}")
        if config.tls_auth_clients != "no" and config.tls_ca_cert_file is None:
            raise ConfigError(source, "tls_ca_cert_file",
                              f"expected a file path: tls_auth_clients is {config.tls_auth_clients}")
        if config.tls_port == config.port:
            raise ConfigError(source, "tls_port", f"expected a port other than port ({config.port})")


def check_paths(config: Config, source: str) -> None:
    """Settings that name places on disk: checked at start so a typo fails fast."""
    if config.appendonly and not os.path.isdir(config.dir):
        raise ConfigError(source, "dir", f"expected an existing directory for the append-only file, got {config.dir!r}")
    if config.log_file is not None:
        parent = os.path.dirname(os.path.abspath(config.log_file))
        if not os.path.isdir(parent):
            raise ConfigError(source, "log_file", f"expected a file in an existing directory, got {config.log_file!r}")
