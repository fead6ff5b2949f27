"""Loading user-edited YAML with one-line errors.

Every file a user edits (tuning, thresholds, routes, probes) goes through here so that a mistake
stops the run before anything reaches a node, with one line naming the file, the key and what was
expected, e.g. ``inventory/tuning.yaml: sysctl.net.core.somaxconn: expected an integer in 128..65535, got 'lots'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pyinfra.api.exceptions import PyinfraError

ModelT = TypeVar("ModelT", bound=BaseModel)


class FieldError(ValueError):
    """Raised by a model's validators to blame a key below the validated field.

    ``FieldError("net.core.somaxconn", "expected an integer in 128..65535")`` raised while
    validating ``sysctl`` is reported as ``sysctl.net.core.somaxconn: expected ...``.
    """

    def __init__(self, key: str, expected: str):
        self.key, self.expected = key, expected
        super().__init__(f"{key}: {expected}")


class ConfigError(PyinfraError):
    """A user-facing, one-line configuration error.

    A PyinfraError, so that pyinfra's CLI prints it as one line and stops before touching any host.
    """

    def __init__(self, file: str | Path, key: str, expected: str):
        self.file, self.key, self.expected = str(file), key, expected
        super().__init__(f"{self.file}: {key}: {expected}" if key else f"{self.file}: {expected}")


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"invalid YAML ({problem})") from None


_UNION_MEMBER_TAGS = {"int", "str", "float", "bool", "dict", "list", "none"}


def _dotted(loc: tuple[Any, ...]) -> str:
    # pydantic appends the union member it tried ("int", "literal['auto']"): not a key the user wrote.
    keys = [str(part) for part in loc if not (str(part) in _UNION_MEMBER_TAGS or "[" in str(part))]
    return ".".join(keys)


def model_from_data(path: str | Path, model: type[ModelT], data: Any) -> ModelT:
    """Validate already-parsed data against a pydantic model, reporting the first error."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _dotted(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            raise ConfigError(path, f"{key}.{cause.key}" if key else cause.key, cause.expected) from None
        if err["type"] == "extra_forbidden":
            raise ConfigError(path, key, "unknown key") from None
        if err["type"] == "missing":
            raise ConfigError(path, key, "required key is missing") from None
        given = err.get("input")
        message = err["msg"]
        # pydantic prefixes custom errors with "Value error, "; the user needs only the reason.
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        message = message.replace("Input should be ", "expected ")
        shown = f" (got {given!r})" if isinstance(given, (str, int, float, bool)) or given is None else ""
        raise ConfigError(path, key, f"{message}{shown}") from None


def settings_from_data(host: str, role: str, model: type[ModelT], data: Any) -> ModelT:
    """A role's settings on ``host``: ``model``'s defaults overridden by host data ``role``.

    Errors name the key as group data writes it: ``inventory data for worker-node-14: prometheus.retention``.
    """
    try:
        return model_from_data(f"inventory data for {host}", model, data)
    except ConfigError as exc:
        raise ConfigError(exc.file, f"{role}.{exc.key}" if exc.key else role, exc.expected) from None


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it into ``model``; any problem is one ConfigError line."""
    return model_from_data(path, model, read_yaml(path))


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are not coerced across types."""

    model_config = {"extra": "forbid", "strict": True, "frozen": True}
