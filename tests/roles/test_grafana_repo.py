"""The package facts of Grafana Labs' components (roles/<component>/package.py) agree with each other and
with how upstream builds the packages, so a wrong path or version fails here instead of on a node.

The packages cannot be installed on this machine; what each test compares against is quoted from the
upstream file named beside it.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess

import pytest

from homelab.config import ConfigError
from roles import grafana_repo
from roles.alloy.package import PACKAGE as ALLOY
from roles.grafana.package import PACKAGE as GRAFANA
from roles.loki.package import PACKAGE as LOKI
from roles.promtail.package import PACKAGE as PROMTAIL
from tests.conftest import REPO

PACKAGES = {package.name: package for package in (GRAFANA, LOKI, PROMTAIL, ALLOY)}
GROUP_DATA = {"grafana": "grafana.py", "loki": "loki.py", "promtail": "log_shipper.py", "alloy": "log_shipper.py"}

# How each builder turns release version V into the version apt shows:
# nfpm without a release field (grafana/loki tools/packaging/nfpm.jsonnet) and fpm without --iteration
# (grafana/grafana pkg/build/daggerbuild/fpm/build.go): V itself; fpm --iteration 1
# (grafana/alloy tools/make/packaging.mk, ALLOY_PACKAGE_RELEASE := 1): V-1.
APT_VERSION_FORMAT = {
    "grafana": r"\d+\.\d+\.\d+",
    "loki": r"\d+\.\d+\.\d+",
    "promtail": r"\d+\.\d+\.\d+",
    "alloy": r"\d+\.\d+\.\d+-1",
}
# One release asset per component, as upstream names it: loki's and promtail's nfpm default
# <name>_<version>_<arch>.deb; alloy's ALLOY_PACKAGE_PREFIX dist/alloy-$(VERSION)-$(RELEASE) + .amd64.deb;
# Grafana's dl.grafana.com/oss/release/grafana_<version>_amd64.deb.
RELEASE_ASSETS = {
    "grafana": ("11.6.0", "amd64", "grafana_11.6.0_amd64.deb"),
    "loki": ("3.5.0", "amd64", "loki_3.5.0_amd64.deb"),
    "promtail": ("3.5.0", "arm64", "promtail_3.5.0_arm64.deb"),
    "alloy": ("1.10.0", "amd64", "alloy-1.10.0-1.amd64.deb"),
}


def pinned_install(component: str) -> grafana_repo.GrafanaInstall:
    """The `install` settings the repo's group data gives ``component``."""
    data = runpy.run_path(str(REPO / "inventory" / "group_data" / GROUP_DATA[component]))[component]
    return grafana_repo.GrafanaInstall(**data["install"])


def pinned_version(component: str) -> str:
    return pinned_install(component).version


def program_run_by_unit(package: grafana_repo.VendorPackage) -> str:
    """The executable the unit's ExecStart ends up running, through the package's wrapper if it has one."""
    first = package.exec_start.split()[0]
    return package.wrappers[first].split()[0] if first in package.wrappers else first


@pytest.mark.parametrize("component", PACKAGES)
def test_the_checker_and_the_cli_run_the_binary_the_unit_runs(component):
    package = PACKAGES[component]
    assert program_run_by_unit(package) == package.binary
    for wrapper, command in package.wrappers.items():
        assert wrapper.startswith("/usr/sbin/") and command.split()[0] == package.binary
    if package.check_args:
        assert package.check.split()[0] == package.binary
        assert "{staged}" in package.check_args
    assert package.unit == f"{package.service}.service"


def test_grafana_cli_is_the_binary_the_server_wrapper_execs():
    from roles.grafana.package import CLI

    assert CLI.split()[0] == program_run_by_unit(GRAFANA) == "/usr/share/grafana/bin/grafana"
    assert CLI.split()[1] == "cli" and f"--config {GRAFANA.config_file}" in CLI


@pytest.mark.parametrize("component", PACKAGES)
def test_the_pinned_version_is_spelt_as_that_vendors_apt_shows_it(component):
    package = PACKAGES[component]
    apt_version = package.debian_version(pinned_version(component))
    assert re.fullmatch(APT_VERSION_FORMAT[component], apt_version), apt_version


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs dpkg to validate Debian version strings")
@pytest.mark.parametrize("component", PACKAGES)
def test_dpkg_accepts_the_apt_version_and_orders_it_after_the_release(component):
    package = PACKAGES[component]
    version = pinned_version(component)
    apt_version = package.debian_version(version)
    assert subprocess.run(["dpkg", "--validate-version", apt_version]).returncode == 0
    assert subprocess.run(["dpkg", "--compare-versions", apt_version, "ge", version]).returncode == 0


@pytest.mark.parametrize("component", PACKAGES)
def test_the_offline_asset_name_is_the_release_assets_name(component):
    version, arch, asset = RELEASE_ASSETS[component]
    assert PACKAGES[component].asset_name(version, arch) == asset


@pytest.mark.parametrize("component", ["loki", "promtail", "alloy"])
def test_facts_were_read_at_the_version_group_data_pins(component):
    package = PACKAGES[component]
    [upstream] = package.read_from
    assert upstream.tag == f"v{pinned_version(component)}"
    assert upstream.paths and all(not path.startswith("/") for path in upstream.paths)


def test_alloys_positions_live_under_the_storage_path_its_unit_sets():
    from roles.alloy.package import STORAGE_PATH

    assert STORAGE_PATH == "/var/lib/alloy/data"
    with pytest.raises(ValueError, match="ExecStart sets no --nothing"):
        ALLOY.exec_start_option("--nothing")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("adduser"),
                    reason="needs root, unshare and Debian's adduser to create users in a private copy of /etc")
@pytest.mark.parametrize("component", PACKAGES)
def test_the_packages_user_setup_gives_the_user_and_groups_the_facts_name(component, tmp_path):
    # This machine's Debian adduser/useradd (the nodes' Debian ships the same tools), run on a throwaway copy of /etc and /home
    # in a private mount namespace: this machine's users are not touched.
    package = PACKAGES[component]
    script = (f"set -e; mount -t tmpfs tmpfs {tmp_path}; mkdir {tmp_path}/etc {tmp_path}/home; cp -a /etc/. {tmp_path}/etc/; "
              f"mount --bind {tmp_path}/etc /etc; mount --bind {tmp_path}/home /home; "
              f"({package.user_setup}) >/dev/null 2>&1; id -gn {package.user}; id -Gn {package.user}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    primary, groups = result.stdout.splitlines()
    assert primary == package.group
    assert set(package.extra_groups) <= set(groups.split())


def test_a_missing_offline_asset_names_the_file_upstream_publishes(tmp_path):
    install = grafana_repo.GrafanaInstall(source="offline", version="1.10.0", artifacts_dir=str(tmp_path))
    with pytest.raises(ConfigError) as exc:
        grafana_repo.offline_deb(ALLOY, install, "amd64")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"alloy.install: source: offline artifact not found: looked for {tmp_path}/alloy/alloy-1.10.0-1.amd64.deb")
    (tmp_path / "alloy").mkdir()
    (tmp_path / "alloy" / "alloy-1.10.0-1.amd64.deb").write_bytes(b"")
    assert grafana_repo.offline_deb(ALLOY, install, "amd64").name == "alloy-1.10.0-1.amd64.deb"


def test_a_debian_revision_in_the_pinned_version_is_refused():
    # The revision is the package builder's (ALLOY's "-1"); pinning it too would ask apt for 1.10.0-1-1.
    with pytest.raises(Exception, match="string_pattern_mismatch|should match pattern"):
        grafana_repo.GrafanaInstall(version="1.10.0-1")
