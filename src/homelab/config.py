"""Loading user-edited YAML with one-line errors.

Every file a user edits (tuning, thresholds, routes, probes) goes through here so that a mistake
stops the run before anything reaches a node, with one line naming the file, the key and what was
expected, e.g. ``inventory/tuning.yaml: sysctl.net.core.somaxconn: expected an integer in 128..65535, got 'lots'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from alert_relay import config as _rules
from alert_relay.config import FieldError, StrictModel
from pydantic import BaseModel
from pyinfra.api.exceptions import PyinfraError

# The rules have one implementation, alert_relay.config's, since the relay must apply them on nodes
# where homelab is not installed. StrictModel: unknown keys are errors, values are not coerced
# across types. FieldError: raised by a validator to blame a key below the validated field, e.g.
# FieldError("net.core.somaxconn", "expected an integer in 128..65535") raised while validating
# ``sysctl`` is reported as ``sysctl.net.core.somaxconn: expected ...``.
__all__ = ["ConfigError", "FieldError", "StrictModel", "load_yaml_model", "model_from_data", "read_yaml",
           "settings_from_data"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(PyinfraError):
    """A user-facing, one-line configuration error.

    A PyinfraError, so that pyinfra's CLI prints it as one line and stops before touching any host.
    """

    def __init__(self, file: str | Path, key: str, expected: str):
        self.file, self.key, self.expected = str(file), key, expected
        super().__init__(f"{self.file}: {key}: {expected}" if key else f"{self.file}: {expected}")


def _one_line(exc: _rules.ConfigFileError) -> ConfigError:
    return ConfigError(exc.file, exc.key, exc.expected)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a ConfigError."""
    try:
        return _rules.read_yaml(path)
    except _rules.ConfigFileError as exc:
        raise _one_line(exc) from None


def model_from_data(path: str | Path, model: type[ModelT], data: Any) -> ModelT:
    """Validate already-parsed data against a pydantic model, reporting the first error."""
    try:
        return _rules.model_from_data(path, model, data)
    except _rules.ConfigFileError as exc:
        raise _one_line(exc) from None


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it into ``model``; any problem is one ConfigError line."""
    return model_from_data(path, model, read_yaml(path))


def settings_from_data(host: str, role: str, model: type[ModelT], data: Any) -> ModelT:
    """A role's settings on ``host``: ``model``'s defaults overridden by host data ``role``.

    Errors name the key as group data writes it: ``inventory data for worker-node-14: prometheus.retention``.
    """
    try:
        return model_from_data(f"inventory data for {host}", model, data)
    except ConfigError as exc:
        raise ConfigError(exc.file, f"{role}.{exc.key}" if exc.key else role, exc.expected) from None
