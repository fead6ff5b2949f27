"""The tuning file's schema (inventory/tuning.yaml): sysctls, open-file limits, nginx sockets.

Only sysctls listed in SYSCTL_RANGES are accepted: each has a range a human has thought about,
so a typo or a value the kernel would truncate is caught on the control machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from homelab.config import FieldError, StrictModel, load_yaml_model

# key -> (minimum, maximum) for integer sysctls
SYSCTL_RANGES: dict[str, tuple[int, int]] = {
    "net.core.somaxconn": (128, 65535),
    "net.ipv4.tcp_max_syn_backlog": (128, 1048576),
    "net.core.netdev_max_backlog": (1000, 1048576),
    "fs.file-max": (8192, 2**63 - 1),
    "fs.nr_open": (1048576, 1073741816),
    "vm.overcommit_memory": (0, 2),
    "vm.swappiness": (0, 200),
    "net.ipv4.tcp_fin_timeout": (1, 600),
    "net.core.rmem_max": (4096, 2**31 - 1),
    "net.core.wmem_max": (4096, 2**31 - 1),
    "fs.inotify.max_user_watches": (8192, 2**31 - 1),
}
PORT_RANGE_KEY = "net.ipv4.ip_local_port_range"
KNOWN_SYSCTLS = sorted([*SYSCTL_RANGES, PORT_RANGE_KEY])


class Limits(StrictModel):
    nofile: int = Field(65536, ge=1024, le=1048576)


class NginxTuning(StrictModel):
    worker_processes: int | Literal["auto"] = "auto"
    worker_connections: int = Field(4096, ge=64, le=1048576)
    worker_rlimit_nofile: int = Field(16384, ge=1024, le=1048576)
    listen_backlog: int = Field(4096, ge=16, le=65535)
    keepalive_timeout_s: int = Field(65, ge=0, le=3600)
    upstream_keepalive: int = Field(32, ge=0, le=4096)


class Tuning(StrictModel):
    sysctl: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Limits()
    nginx: NginxTuning = NginxTuning()

    @field_validator("sysctl")
    @classmethod
    def _known_and_in_range(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key, value in values.items():
            if key == PORT_RANGE_KEY:
                ints = isinstance(value, list) and all(type(v) is int for v in value)
                if not (ints and len(value) == 2 and 1024 <= value[0] < value[1] <= 65535):
                    raise FieldError(key, f"expected [low, high] with 1024 <= low < high <= 65535, got {value!r}")
                continue
            if key not in SYSCTL_RANGES:
                raise FieldError(key, f"unknown sysctl, expected one of {', '.join(KNOWN_SYSCTLS)}")
            low, high = SYSCTL_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FieldError(key, f"expected an integer in {low}..{high}, got {value!r}")
        return values

    @model_validator(mode="after")
    def _backlog_fits_somaxconn(self) -> "Tuning":
        somaxconn = self.sysctl.get("net.core.somaxconn", 4096)
        if self.nginx.listen_backlog > somaxconn:
            raise FieldError(
                "nginx.listen_backlog",
                f"expected at most net.core.somaxconn ({somaxconn}), got {self.nginx.listen_backlog}; "
                "the kernel would silently cut the backlog",
            )
        if self.nginx.worker_rlimit_nofile > self.limits.nofile:
            raise FieldError(
                "nginx.worker_rlimit_nofile",
                f"expected at most limits.nofile ({self.limits.nofile}), got {self.nginx.worker_rlimit_nofile}",
            )
        return self

    def sysctl_lines(self) -> dict[str, str]:
        """sysctl key -> value as the kernel prints it (lists space-separated)."""
        return {
            key: " ".join(map(str, value)) if isinstance(value, list) else str(value)
            for key, value in self.sysctl.items()
        }


def load_tuning(path: str | Path) -> Tuning:
    return load_yaml_model(path, Tuning)
