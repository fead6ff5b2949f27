"""The tuning file: what users write is validated with one-line errors, and rendered faithfully."""

from pathlib import Path

import pytest

from homelab.config import ConfigError
from roles.tuning import render_sysctl_conf
from roles.tuning.settings import load_tuning

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "inventory" / "tuning.yaml"


def write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = SHIPPED.read_text()
    assert old in text, f"test fixture drifted: {old!r} not in tuning.yaml"
    path = tmp_path / "tuning.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_shipped_file_holds_the_issue_sysctls():
    tuning = load_tuning(SHIPPED)
    for key in (
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.netdev_max_backlog",
        "fs.file-max",
        "net.ipv4.ip_local_port_range",
        "vm.overcommit_memory",
    ):
        assert key in tuning.sysctl


def test_rendered_sysctl_conf_is_what_sysctl_reads():
    conf = render_sysctl_conf(load_tuning(SHIPPED), source="inventory/tuning.yaml")
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert "net.core.somaxconn = 16384" in lines
    assert "net.ipv4.ip_local_port_range = 10240 65000" in lines
    assert all(" = " in line for line in lines)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("somaxconn: 16384", "somaxconn: lots", "sysctl.net.core.somaxconn: expected an integer in 128..65535, got 'lots'"),
        ("somaxconn: 16384", "somaxconn: 70000", "sysctl.net.core.somaxconn: expected an integer in 128..65535, got 70000"),
        ("fs.file-max:", "fs.file-maxx:", "sysctl.fs.file-maxx: unknown sysctl, expected one of"),
        ("[10240, 65000]", "[65000, 10240]", "sysctl.net.ipv4.ip_local_port_range: expected [low, high]"),
        ("vm.overcommit_memory: 1", "vm.overcommit_memory: 3", "sysctl.vm.overcommit_memory: expected an integer in 0..2"),
        ("nofile: 65536", "nofile: 100", "limits.nofile: expected greater than or equal to 1024"),
        ("keepalive_timeout_s:", "keepalive_timeout:", "nginx.keepalive_timeout: unknown key"),
        ("worker_connections: 16384", "worker_connections: '16384'", "nginx.worker_connections: expected a valid integer"),
        ("somaxconn: 16384", "somaxconn: 1024", "nginx.listen_backlog: expected at most net.core.somaxconn (1024), got 4096"),
        ("nofile: 65536", "nofile: 8192", "nginx.worker_rlimit_nofile: expected at most limits.nofile (8192)"),
        ("sysctl:\n", "sysctl: [\n", "line "),
    ],
)
def test_bad_values_give_one_line_naming_file_and_key(tmp_path, old, new, message):
    path = write_variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load_tuning(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert message in text


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read file"):
        load_tuning(tmp_path / "nope.yaml")
