"""The relay's config file and one-line config errors.

The rules every settings file follows (unknown keys are errors, one line naming the file, the key
and what was expected). They live here because the relay runs on a node from its own wheel, where
homelab and pyinfra are not installed; the control machine's homelab.config uses them as well.
"""

from __future__ import annotations

import os
import pwd
import resource
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pprof_sampler import MAX_HZ as MAX_PROFILING_HZ
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigFileError(ValueError):
    """One line: ``file: key: expected``."""

    def __init__(self, file: str | Path, key: str, expected: str):
        self.file, self.key, self.expected = str(file), key, expected
        super().__init__(f"{self.file}: {key}: {expected}" if key else f"{self.file}: {expected}")


class FieldError(ValueError):
    """Raised by validators to blame a key below the validated field (``0.match.alertname``)."""

    def __init__(self, key: str, expected: str):
        self.key, self.expected = key, expected
        super().__init__(f"{key}: {expected}")


class StrictModel(BaseModel):
    model_config = {"extra": "forbid", "strict": True, "frozen": True}


_UNION_MEMBER_TAGS = {"int", "str", "float", "bool", "dict", "list", "none"}


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not (str(part) in _UNION_MEMBER_TAGS or "[" in str(part)))


def model_from_data(path: str | Path, model: type[ModelT], data: Any) -> ModelT:
    """Validate parsed YAML against ``model``; the first problem becomes a ConfigFileError."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _dotted(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            raise ConfigFileError(path, f"{key}.{cause.key}" if key else cause.key, cause.expected) from None
        if err["type"] == "extra_forbidden":
            raise ConfigFileError(path, key, "unknown key") from None
        if err["type"] == "missing":
            raise ConfigFileError(path, key, "required key is missing") from None
        given = err.get("input")
        message = err["msg"].removeprefix("Value error, ").replace("Input should be ", "expected ")
        shown = f" (got {given!r})" if isinstance(given, (str, int, float, bool)) or given is None else ""
        raise ConfigFileError(path, key, f"{message}{shown}") from None


# libyaml's parser when PyYAML has it (its wheels do): a deploy reads the same YAML files once per host
# (the pure-Python loader: ~5 ms per host of planning under cProfile).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(path, "", f"cannot read file ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigFileError(path, f"line {mark.line + 1}" if mark else "", f"invalid YAML ({problem})") from None


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    return model_from_data(path, model, read_yaml(path))


class RelayTuning(StrictModel):
    """What a deployment chooses: every config key but the paths the deploy itself owns.

    roles/alert_relay's group-data settings extend this, so bounds and defaults live here once.
    """

    listen: str = "0.0.0.0:9095"
    slack_base_url: str = "https://slack.com/api/"
    faxplus_base_url: str = "https://restapi.fax.plus"
    # For "silence" links; defaults to the externalURL Alertmanager sends with each notification.
    alertmanager_url: str | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    # Delivery: a message failing this many times (429s do not count) moves to the dead letters.
    max_attempts: int = Field(12, ge=1, le=1000)
    retry_initial_s: float = Field(1.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86400)
    # Slack allows about one message per second per channel.
    channel_interval_s: float = Field(1.0, ge=0, le=60)
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")

    # What any peer, with or without a token, can make the HTTP side hold (see server.py).
    # Connections open at once; at the limit a new one closes the connection that has waited
    # longest for a request, so idle peers cannot lock senders out. Each needs a file descriptor:
    # the relay raises its soft open-file limit to fit, or refuses to start.
    max_connections: int = Field(4096, ge=16, le=1 << 20)
    # From the connection (or the first byte after a keep-alive wait) to the end of the headers:
    # a whole-request deadline, so trickling a byte at a time does not extend it.
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    max_header_bytes: int = Field(16384, ge=1024, le=1 << 20)
    # From the end of the headers to the end of the body (max_body_bytes).
    body_timeout_s: float = Field(30.0, gt=0, le=600)
    # A keep-alive connection with no request, and the requests one connection may carry.
    idle_timeout_s: float = Field(60.0, gt=0, le=3600)
    keepalive_max_requests: int = Field(1000, ge=1, le=1_000_000)
    # A peer that does not read its answer is cut off after this.
    send_timeout_s: float = Field(10.0, gt=0, le=600)
    # Continuous profiling (pprof_sampler): CPU samples a second, served at /debug/pprof/profile
    # behind the /metrics login for Grafana Alloy's pyroscope.scrape; 0 = off.
    profiling_hz: int = Field(0, ge=0, le=MAX_PROFILING_HZ)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, e.g. {cls.model_fields['listen'].default} (got {value!r})")
        return value

    @field_validator("slack_base_url", "faxplus_base_url", "alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL (got {value!r})")
        return value


class RelayConfig(RelayTuning):
    """The relay's YAML config (``alert-relay --config FILE``)."""

    routes_file: str
    queue_path: str
    # Secrets are read from files (written root:alert-relay 0640 by roles/alert_relay), never from
    # this file or argv.
    slack_token_file: str
    faxplus_token_file: str
    alertmanager_token_file: str
    fax_webhook_token_file: str
    # exporter-toolkit's web config (certificate, key, bcrypt logins): when set, the relay serves
    # TLS only and GET /healthz and /metrics ask for a login (alert_relay.web).
    web_config_file: str | None = None

    @model_validator(mode="after")
    def _profiles_behind_a_login(self) -> "RelayConfig":
        if self.profiling_hz and not self.web_config_file:
            raise FieldError("profiling_hz", f"expected 0 without web_config_file (CPU profiles are served only "
                                             f"behind its logins), got {self.profiling_hz}")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


# Descriptors the relay needs besides its connections: the queue's files, the listening socket,
# connections to Slack and FAX.PLUS, logs.
SPARE_FILE_DESCRIPTORS = 64


def fit_open_file_limit(config_path: str | Path, config: RelayTuning) -> None:
    """Raise the soft open-file limit to hold max_connections; a hard limit too low is a config error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = config.max_connections + SPARE_FILE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigFileError(config_path, "max_connections", (
                f"expected at most {hard - SPARE_FILE_DESCRIPTORS}: the open-file limit is {hard} "
                f"and {SPARE_FILE_DESCRIPTORS} descriptors are kept for the queue and Slack (got {config.max_connections})"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def read_secret(config_path: str | Path, key: str, path: str) -> str:
    """The content of a token file named by config key ``key``, stripped; errors never show content.

    The file must belong to the user the relay runs as (or to root, as roles/alert_relay writes
    them: root-owned, group-readable, so the service cannot rewrite its own secrets) and give
    others no access and its group at most read access: 0600, 0640, 0400 or 0440.
    """
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            raw = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(config_path, key, f"cannot read {path} ({exc.strerror})") from None
    owners = {0, os.geteuid()}
    if info.st_uid not in owners or info.st_mode & 0o037:
        expected = " or ".join(dict.fromkeys(_user_name(uid) for uid in sorted(owners, reverse=True)))
        raise ConfigFileError(config_path, key, (
            f"{path} is owned by {_user_name(info.st_uid)} with mode {stat.S_IMODE(info.st_mode):04o}: expected "
            f"owner {expected} and mode 0600 or 0640 (no access for others)"))
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigFileError(config_path, key, f"{path} is over {MAX_SECRET_BYTES} bytes: expected one token")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigFileError(config_path, key, f"{path} is not valid UTF-8 text (byte {exc.start})") from None
    if not value:
        raise ConfigFileError(config_path, key, f"{path} is empty")
    if not value.isprintable():
        raise ConfigFileError(config_path, key, f"{path} holds control characters or several lines: expected one token")
    return value


MAX_SECRET_BYTES = 4096


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
