"""A Grafana Labs package's own config checker (its roles/<name>/package.py `check`), run on a
config the role rendered, when the package is installed on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from roles.grafana_repo import VendorPackage


def needs_package(package: VendorPackage) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not Path(package.binary).exists(),
        reason=f"needs Grafana Labs' {package.name} package ({package.binary}): it installs only from "
               "apt.grafana.com or an offline release asset, and neither is reachable from this machine")


def packaged_check(package: VendorPackage, content: str, folder: Path) -> subprocess.CompletedProcess:
    staged = folder / f"{Path(package.config_file).name}.staged"
    staged.write_text(content)
    return subprocess.run(package.check.format(staged=staged), shell=True, capture_output=True, text=True)
