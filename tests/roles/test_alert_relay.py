"""alert-relay's rendered config, routes and their checks: what the relay will read on its node."""

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_relay.config import RelayTuning
from homelab.config import ConfigError, model_from_data
from homelab.types import PORT_MAX, PORT_MIN, port_of
from roles.alert_relay import (
    APP,
    QUEUE_PATH,
    ROUTES_PATH,
    TOKEN_FILES,
    TOKEN_MODE,
    check_open_file_limit,
    Settings,
    read_routes,
    render_config,
    config_check_command,
    routes_check_command,
    token_path,
)
from tests.strategies import typed

REPO = Path(__file__).resolve().parents[2]
# Only what differs from the role's defaults, which may be nothing.
GROUP_DATA = runpy.run_path(str(REPO / "inventory" / "group_data" / "alert_relay.py")).get("alert_relay", {})
SECRETS = {"slack_bot_token", "faxplus_token", "alertmanager_webhook_token", "fax_webhook_token"}


def test_group_data_renders_a_config_with_its_paths_and_values():
    settings = model_from_data("inventory/group_data/alert_relay.py", Settings, GROUP_DATA)
    config = yaml.safe_load(render_config(settings))
    assert config["listen"] == GROUP_DATA.get("listen", RelayTuning().listen)
    assert config["routes_file"] == ROUTES_PATH
    assert config["queue_path"] == QUEUE_PATH and QUEUE_PATH.startswith("/var/lib/alert-relay/")
    assert config["slack_base_url"] == "https://slack.com/api/"
    assert config["faxplus_base_url"] == "https://restapi.fax.plus"
    assert "alertmanager_url" not in config  # the relay then uses the externalURL Alertmanager sends
    assert set(TOKEN_FILES.values()) == SECRETS
    for key, secret in TOKEN_FILES.items():
        assert config[key] == token_path(secret) == f"/etc/alert-relay/{secret}"


def test_config_carries_group_data_overrides():
    settings = Settings(listen="127.0.0.1:19095", alertmanager_url="http://worker-node-14:9093",
                        slack_base_url="http://127.0.0.1:8999/api/", max_body_bytes=4096)
    config = yaml.safe_load(render_config(settings))
    assert config["listen"] == "127.0.0.1:19095" and port_of(settings.listen) == 19095
    assert config["alertmanager_url"] == "http://worker-node-14:9093"
    assert config["slack_base_url"] == "http://127.0.0.1:8999/api/"
    assert config["max_body_bytes"] == 4096
    slow_retries = yaml.safe_load(render_config(Settings(max_attempts=3, retry_max_s=60.0, channel_interval_s=1.5)))
    assert (slow_retries["max_attempts"], slow_retries["retry_max_s"], slow_retries["channel_interval_s"]) == (3, 60.0, 1.5)


@pytest.mark.parametrize("data, message", [
    ({"listen": "9095"}, "alert-relay group data: listen: expected address:port with a port in 1..65535, e.g. 0.0.0.0:8000 (got '9095')"),
    ({"listen": "0.0.0.0:99999"}, "alert-relay group data: listen: expected address:port with a port in 1..65535, e.g. 0.0.0.0:8000 (got '0.0.0.0:99999')"),
    ({"slack_base_url": "slack.com"}, "alert-relay group data: slack_base_url: expected an http:// or https:// URL (got 'slack.com')"),
    ({"log_level": "verbose"}, "alert-relay group data: log_level: expected 'debug', 'info', 'warning' or 'error' (got 'verbose')"),
    ({"slack_token": "xoxb-1"}, "alert-relay group data: slack_token: unknown key"),
])
def test_bad_group_data_is_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as failure:
        model_from_data("alert-relay group data", Settings, data)
    assert str(failure.value) == message


def test_routes_are_uploaded_as_written_once_valid():
    assert read_routes(Settings()) == (REPO / "alerts" / "routes.yaml").read_text()


def test_bad_routes_stop_the_deploy_with_one_line(tmp_path, monkeypatch):
    import roles.alert_relay as role

    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "routes.yaml").write_text("slack:\n  default_channel: homelab-alerts\n")
    monkeypatch.setattr(role, "REPO_ROOT", tmp_path)
    with pytest.raises(ConfigError) as failure:
        read_routes(Settings())
    assert str(failure.value).startswith("alerts/routes.yaml: slack.default_channel: ")
    assert "\n" not in str(failure.value)


def relay_binary() -> str:
    binary = shutil.which("alert-relay", path=str(Path(sys.executable).parent))
    if not binary:
        pytest.skip("the alert-relay console script is not installed in this venv")
    return binary


def run_check(command: str, staged: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """A node-side check, run here with this venv's relay and the node's paths under ``tmp_path``."""
    command = (command.replace(APP.binary(), relay_binary()).replace("/etc/alert-relay/", f"{tmp_path}/")
               .replace("/var/lib/alert-relay/", f"{tmp_path}/").format(staged=staged))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)


def test_the_relay_checks_staged_routes(tmp_path):
    staged = tmp_path / "routes.yaml.staged"
    staged.write_text(read_routes(Settings()))
    result = run_check(routes_check_command(), staged, tmp_path)
    assert result.returncode == 0, result.stderr
    staged.write_text(staged.read_text().replace('default_channel: "#homelab-alerts"', "default_channel: 42"))
    result = run_check(routes_check_command(), staged, tmp_path)
    assert result.returncode == 2
    assert "default_channel" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_relay_checks_the_staged_config_with_its_routes_and_tokens(tmp_path):
    (tmp_path / "routes.yaml").write_text(read_routes(Settings()))
    staged = tmp_path / "config.yaml.staged"
    config = render_config(model_from_data("group data", Settings, GROUP_DATA))
    staged.write_text(config.replace("/etc/alert-relay/", f"{tmp_path}/").replace("/var/lib/alert-relay/", f"{tmp_path}/"))
    # The tokens are written before the config: without them the check refuses it.
    result = run_check(config_check_command(), staged, tmp_path)
    assert result.returncode == 2 and "slack_token_file" in result.stderr
    for secret in TOKEN_FILES.values():
        (tmp_path / secret).write_text("test-token\n")
        (tmp_path / secret).chmod(0o644)
    # ... and with the mode the role gives them, not readable by others.
    result = run_check(config_check_command(), staged, tmp_path)
    assert result.returncode == 2 and "expected owner root and mode 0600 or 0640" in result.stderr, result.stderr
    for secret in TOKEN_FILES.values():
        (tmp_path / secret).chmod(int(TOKEN_MODE, 8))
    result = run_check(config_check_command(), staged, tmp_path)
    assert result.returncode == 0, result.stderr


relay_settings_accepted_here = st.builds(
    Settings,
    listen=st.tuples(st.sampled_from(["0.0.0.0", "127.0.0.1", "10.77.0.14", "localhost"]), st.integers(PORT_MIN, PORT_MAX))
    .map(lambda host_port: f"{host_port[0]}:{host_port[1]}"),
    slack_base_url=st.sampled_from(["https://slack.com/api/", "http://127.0.0.1:8999/api/"]),
    faxplus_base_url=st.sampled_from(["https://restapi.fax.plus", "http://127.0.0.1:8998"]),
    alertmanager_url=st.sampled_from([None, "http://worker-node-14:9093"]),
    # Every number and choice, within the bounds the role's Settings (the relay's RelayTuning) declares.
    **{field: values for field in Settings.model_fields if (values := typed(Settings, field)) is not None},
)


@settings(max_examples=100, deadline=None)
@given(relay_settings_accepted_here)
def test_any_group_data_the_deploy_accepts_the_relay_accepts(group_settings):
    """The control machine's checks are no looser than the relay's own, so a bad value stops the run early."""
    from alert_relay.config import RelayConfig, model_from_data as relay_model_from_data

    from roles.pki.web import WEB_CONFIG_DIR

    # profiling_hz comes with pki.tls's web config, or the deploy refuses it (check_profiles_behind_a_login).
    web = f"{WEB_CONFIG_DIR}/alert_relay.yml" if group_settings.profiling_hz else None
    relay_model_from_data("rendered", RelayConfig, yaml.safe_load(render_config(group_settings, web_config_file=web)))


def test_max_connections_must_fit_the_open_file_limit():
    from alert_relay.config import SPARE_FILE_DESCRIPTORS

    nofile = 4096
    check_open_file_limit(Settings(max_connections=nofile - SPARE_FILE_DESCRIPTORS), nofile)
    with pytest.raises(ConfigError, match=rf"alert_relay.max_connections: expected at most {nofile - SPARE_FILE_DESCRIPTORS}"):
        check_open_file_limit(Settings(max_connections=nofile - SPARE_FILE_DESCRIPTORS + 1), nofile)
