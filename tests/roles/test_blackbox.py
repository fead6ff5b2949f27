"""blackbox_exporter's modules from group data: validated, checked by the exporter itself, and probing."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from homelab.config import ConfigError
from roles.blackbox import CONFIG_CHECK, Settings, render_config, render_defaults
from roles.common import role_settings
from tests.local_http import QuietHandler, serving
from tests.roles.test_prometheus import LAB, flag_args, free_port

needs_blackbox = pytest.mark.skipif(not shutil.which("prometheus-blackbox-exporter"),
                                    reason="needs Debian's prometheus-blackbox-exporter")


def lab_settings() -> Settings:
    from pyinfra.context import ctx_host

    with ctx_host.use(LAB.get_group("blackbox")[0]):
        return role_settings("blackbox", Settings)


def settings_error(data: dict) -> str:
    from pyinfra.context import ctx_host

    with ctx_host.use(LAB.get_group("blackbox")[0]):
        with pytest.raises(ConfigError) as error:
            role_settings("blackbox", Settings, data)
    return str(error.value)


def test_lab_probes_use_a_module_the_exporter_has():
    settings = lab_settings()
    assert f"{settings.health_module}:" in render_config(settings)
    assert f"--web.listen-address=:{settings.listen_port}" in flag_args(render_defaults(settings))


def test_bad_modules_give_one_line_errors():
    where = "inventory data for worker-node-14: blackbox"
    assert settings_error({"health_module": "http_3xx"}) == (
        f"{where}.health_module: expected one of the modules ['http_2xx', 'tcp_connect'], got 'http_3xx'"
    )
    assert settings_error({"modules": {"web": {"prober": "http", "tcp": {}}}}) == (
        f"{where}.modules.web.tcp: a 'http' module takes no 'tcp' section"
    )
    assert settings_error({"modules": {"web": {"prober": "smtp"}}}).startswith(f"{where}.modules.web.prober: expected ")


def run_check(staged: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", CONFIG_CHECK.format(staged=shlex.quote(str(staged)))],
                          capture_output=True, text=True, timeout=60)


@needs_blackbox
def test_the_exporters_own_check_accepts_ours_and_refuses_a_bad_prober_option(tmp_path):
    staged = tmp_path / "blackbox.yml.staged"
    staged.write_text(render_config(lab_settings()))
    result = run_check(staged)
    assert result.returncode == 0, result.stderr
    # Prober sections pass through our model: the exporter's check is what catches their typos.
    bad = Settings(modules={"web": {"prober": "http", "http": {"valid_status_code": [200]}}}, health_module="web")
    staged.write_text(render_config(bad))
    result = run_check(staged)
    assert result.returncode != 0 and "valid_status_code" in result.stderr


class _Health(QuietHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()


@needs_blackbox
def test_http_2xx_module_probes_a_live_endpoint(tmp_path):
    with serving(_Health) as web:
        config = tmp_path / "blackbox.yml"
        config.write_text(render_config(lab_settings()))
        port = free_port()
        exporter = subprocess.Popen(
            ["prometheus-blackbox-exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            def probe(path: str) -> str:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        return requests.get(f"http://127.0.0.1:{port}/probe", timeout=10, params={
                            "module": "http_2xx", "target": f"http://127.0.0.1:{web.server_port}{path}"}).text
                    except requests.ConnectionError:
                        assert time.monotonic() < deadline and exporter.poll() is None, "exporter did not start"
                        time.sleep(0.2)

            assert "\nprobe_success 1" in probe("/healthz")
            assert "\nprobe_success 0" in probe("/missing")
        finally:
            exporter.terminate()
            exporter.wait(timeout=30)
