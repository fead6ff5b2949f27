"""Backups on a schedule: a systemd service and timer on the control machine running `homelab backup`.

`homelab backup-timer` prints both units; `--install` writes them to /etc/systemd/system and, when
systemd runs this machine, enables the timer. Without systemd (a container, this project's CI), use
cron with the same command (docs/backups.md).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from homelab.backup.settings import BackupSettings
from homelab.config import ConfigError

UNIT = "homelab-backup"
UNIT_DIR = Path("/etc/systemd/system")
# A backup of the lab takes under a minute; an hour covers a large cluster on a slow link.
TIMEOUT_S = 3600


def homelab_binary() -> Path:
    return Path(sys.executable).with_name("homelab")


def units(settings: BackupSettings, repo: Path, inventory: Path) -> dict[str, str]:
    """file name -> content of the service and the timer."""
    from roles.common import render

    values = {"repo": repo, "inventory": inventory.resolve(), "homelab": homelab_binary(),
              "timeout_s": TIMEOUT_S, "on_calendar": settings.on_calendar}
    return {f"{UNIT}.service": render("backup/homelab-backup.service.j2", **values),
            f"{UNIT}.timer": render("backup/homelab-backup.timer.j2", **values)}


def check_calendar(settings: BackupSettings) -> None:
    """Refuse an OnCalendar expression systemd would reject (systemd-analyze calendar)."""
    result = subprocess.run(["systemd-analyze", "calendar", settings.on_calendar], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError("inventory/group_data/all.py", "backup.on_calendar",
                          f"expected a systemd calendar expression (systemd.time(7)), got {settings.on_calendar!r}")


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def install(settings: BackupSettings, repo: Path, inventory: Path, unit_dir: Path = UNIT_DIR) -> list[Path]:
    """Write the units; enable the timer if systemd runs here. The files written."""
    check_calendar(settings)
    written = []
    for name, text in units(settings, repo, inventory).items():
        path = unit_dir / name
        path.write_text(text)
        written.append(path)
    if systemd_running() and unit_dir == UNIT_DIR:
        for command in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", f"{UNIT}.timer"]):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise ConfigError(shlex.join(command), "", result.stderr.strip() or f"exit status {result.returncode}")
    return written

