"""Every default port is written once, in the role (or service) that owns it (issue 11).

The ports come from the roles themselves: each listener topology.ROLES names, and every field a
role's Settings declares as a homelab.types.Port, with its declared default. The standard ports of
URL schemes (homelab.types.SCHEME_PORTS) are owned there; a role that listens on one names it.
"""

from __future__ import annotations

import inspect
import re
from importlib import import_module
from pathlib import Path

import pytest

from homelab import types
from homelab.topology import ROLES
from homelab.types import PORT_MAX, PORT_MIN, port_of

REPO = Path(__file__).resolve().parents[1]
SEARCHED = ("roles", "src/homelab", "inventory", "deploys")


def is_port_field(field) -> bool:
    bounds = {name: getattr(c, name) for c in field.metadata for name in ("ge", "le") if hasattr(c, name)}
    return bounds == {"ge": PORT_MIN, "le": PORT_MAX}


def owner_file(settings: type, field: str) -> Path:
    """The file of the class that declares ``field`` (a role's Settings may extend its service's model)."""
    declaring = next(cls for cls in settings.__mro__ if field in getattr(cls, "__annotations__", {}))
    return Path(inspect.getsourcefile(declaring)).resolve()


def default_ports() -> dict[int, Path]:
    """Each role's default ports -> the file that declares them."""
    found: dict[int, Path] = {}
    for role in ROLES:
        settings = getattr(import_module(f"roles.{role.name}"), "Settings", None)
        if settings is None:
            continue
        names = {listener.setting for listener in role.listeners}
        names |= {name for name, field in settings.model_fields.items() if is_port_field(field)}
        for name in names:
            default = settings.model_fields[name].default
            if default is None:
                continue
            port = port_of(default) if isinstance(default, str) else default
            found[port] = Path(types.__file__).resolve() if port in types.SCHEME_PORTS.values() else owner_file(settings, name)
    return found


PORTS = default_ports()


def places(port: int) -> list[str]:
    number = re.compile(rf"(?<![\w.]){port}(?![\w.])")
    hits = []
    for folder in SEARCHED:
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            for number_line, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if number.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{number_line}")
    return hits


def test_the_roles_declare_the_ports_the_topology_names():
    # Guards the derivation itself: the scraped and probed ports are among those checked below.
    assert len(PORTS) >= 10


@pytest.mark.parametrize("port", sorted(PORTS))
def test_a_default_port_is_written_once_in_its_owner(port):
    owner = PORTS[port]
    expected = [] if REPO / "src" / "homelab" not in owner.parents and REPO / "roles" not in owner.parents else [owner]
    found = places(port)
    assert [REPO / hit.rsplit(":", 1)[0] for hit in found] == expected, (
        f"port {port} is declared in {owner.relative_to(REPO)} and written in {found}")
