"""A committed YAML file with one key changed, for tests of one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import yaml


def yaml_with(source: Path, tmp_path: Path, dotted_key: str, value) -> Path:
    """``source`` copied into tmp_path with one key set (or, for value ..., removed)."""
    data = yaml.safe_load(source.read_text())
    *parents, last = dotted_key.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
