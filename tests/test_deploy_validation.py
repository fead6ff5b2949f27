"""A bad settings file stops `pyinfra ... deploys/all.py` while operations are prepared: one line, no change."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYINFRA = Path(sys.executable).with_name("pyinfra")


def test_bad_tuning_file_stops_the_deploy_with_one_line(tmp_path):
    bad = tmp_path / "tuning.yaml"
    bad.write_text((REPO / "inventory/tuning.yaml").read_text().replace("somaxconn: 16384", "somaxconn: lots"))
    # --dry and @local: even if validation were broken, nothing would be changed on this machine.
    result = subprocess.run(
        [str(PYINFRA), "-y", "--dry", "--data", f"tuning_file={bad}", "@local", "deploys/all.py"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    error_lines = [line for line in output.splitlines() if "sysctl.net.core.somaxconn" in line]
    assert len(error_lines) == 1, output
    assert f"{bad}: sysctl.net.core.somaxconn: expected an integer in 128..65535, got 'lots'" in error_lines[0]
    assert "Traceback" not in output


def test_cpu_profiles_without_a_login_stop_the_deploy_with_one_line(tmp_path):
    """profiling_hz serves CPU profiles only behind the metrics login, which comes with pki.tls: with
    TLS off the deploy refuses it while operations are prepared, for toy-redis and the relay alike."""
    for role in ("toy_redis", "alert_relay"):
        (tmp_path / "inventory.py").write_text(
            f"{role} = [('@local', {{'ssh_hostname': '127.0.0.1', '{role}': {{'profiling_hz': 19}}}})]\n")
        result = subprocess.run(
            [str(PYINFRA), "-y", "--dry", "--data", f"only_roles={role}", str(tmp_path / "inventory.py"),
             "deploys/all.py"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0
        error_lines = [line for line in output.splitlines() if f"{role}.profiling_hz" in line]
        assert len(error_lines) == 1, output
        assert f"inventory data for @local: {role}.profiling_hz: expected 0 with pki.tls off" in error_lines[0]
        assert "Traceback" not in output
