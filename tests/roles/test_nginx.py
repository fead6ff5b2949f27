"""nginx's rendered config: tuning applied, checked by the real `nginx -t`, and the site check."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roles.nginx import SITES_DIR, Settings, Upstream, render_default_site, render_nginx_conf, site_check_command
from roles.tuning.settings import load_tuning

REPO = Path(__file__).resolve().parents[2]
TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")

needs_nginx = pytest.mark.skipif(
    not shutil.which("nginx") or os.geteuid() != 0 or not Path("/etc/nginx/mime.types").exists(),
    reason="needs Debian's nginx installed and root for `nginx -t` (./dev setup installs it)",
)


def test_tuning_reaches_nginx_conf():
    conf = render_nginx_conf(Settings(), TUNING, "tuning.yaml")
    assert f"worker_connections {TUNING.nginx.worker_connections};" in conf
    assert f"worker_rlimit_nofile {TUNING.nginx.worker_rlimit_nofile};" in conf
    assert f"keepalive_timeout {TUNING.nginx.keepalive_timeout_s}s;" in conf
    site = render_default_site(Settings(), TUNING)
    assert f"backlog={TUNING.nginx.listen_backlog}" in site


def test_unix_socket_upstream_keeps_connections_alive():
    settings = Settings(upstreams=[Upstream(name="grafana", server="unix:/run/grafana/grafana.sock")])
    conf = render_nginx_conf(settings, TUNING, "tuning.yaml")
    block = conf[conf.index("upstream grafana {"):]
    assert "server unix:/run/grafana/grafana.sock;" in block.split("}")[0]
    assert f"keepalive {TUNING.nginx.upstream_keepalive};" in block.split("}")[0]


@needs_nginx
def test_rendered_config_passes_nginx_t(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "default.conf").write_text(render_default_site(Settings(listen_port=18080), TUNING))
    conf = render_nginx_conf(Settings(), TUNING, "tuning.yaml").replace(SITES_DIR, str(sites))
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def run_site_check(tmp_path: Path, content: str, name: str = "probe") -> subprocess.CompletedProcess:
    """The role's check of a site named ``name`` (the grafana role's site too), on ``content``."""
    staged = tmp_path / f"{name}.conf.staged"
    staged.write_text(content)
    return subprocess.run(["sh", "-c", site_check_command(name).format(staged=staged)],
                          capture_output=True, text=True)


@needs_nginx
def test_site_check_accepts_a_good_site_and_refuses_a_broken_one(tmp_path):
    good = "server { listen 127.0.0.1:18081; server_name probe.invalid; location / { return 204; } }\n"
    assert run_site_check(tmp_path, good).returncode == 0
    broken = "server { listen 127.0.0.1:18081; location / { proxy_pass http://nowhere-upstream-x; }\n"
    result = run_site_check(tmp_path, broken)
    assert result.returncode != 0
    assert "nginx" in result.stderr
    # The check works in a scratch copy: nothing is left in the live sites folder.
    assert not list(Path(SITES_DIR).glob("probe.conf*"))


@pytest.mark.skipif(not shutil.which("mtail"), reason="needs Debian's mtail (./dev setup installs it)")
def test_mtail_program_compiles_and_its_check_refuses_a_broken_one(tmp_path):
    from roles.common import render
    from roles.nginx import MTAIL_CHECK

    def check(content: str) -> int:
        staged = tmp_path / "nginx-responses.mtail.staged"
        staged.write_text(content)
        return subprocess.run(["sh", "-c", MTAIL_CHECK.format(staged=staged)], capture_output=True).returncode

    program = render("nginx/responses.mtail.j2")
    assert "counter nginx_http_responses_total by code_class" in program
    assert check(program) == 0
    assert check(program.replace("/ {", "/ ", 1)) != 0
