"""`alert-relay --check-config` / `--check-routes`: exit 0 when valid, else one line naming the key, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from alert_relay.routes import e164, load_routes
from tests.alert_relay.conftest import RELAY, ROUTES

REPO = Path(__file__).resolve().parents[2]


def check(flag: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(RELAY), flag, str(path)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    for name in ("slack", "faxplus", "alertmanager", "fax_hook"):
        (tmp_path / name).write_text("token\n")
        (tmp_path / name).chmod(0o600)
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(ROUTES))
    return tmp_path


def write_config(directory: Path, **changes) -> Path:
    config = {
        "listen": "127.0.0.1:9095", "routes_file": str(directory / "routes.yaml"),
        "queue_path": str(directory / "queue.sqlite"),
        "slack_token_file": str(directory / "slack"), "faxplus_token_file": str(directory / "faxplus"),
        "alertmanager_token_file": str(directory / "alertmanager"),
        "fax_webhook_token_file": str(directory / "fax_hook"),
    }
    config.update(changes)
    config = {key: value for key, value in config.items() if value is not None}
    path = directory / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_repo_routes_file_is_valid():
    assert check("--check-routes", REPO / "alerts" / "routes.yaml").returncode == 0
    routes = load_routes(REPO / "alerts" / "routes.yaml")
    assert routes.alert_channel({"alertname": "ToyRedisDown", "severity": "warning"}) == "#toy-redis"
    assert routes.alert_channel({"alertname": "ToyRedisDown", "severity": "critical"}) == "#homelab-critical"
    assert routes.alert_channel({"alertname": "NodeDown", "severity": "warning"}) == routes.default_channel


def test_valid_config_passes(config_dir):
    result = check("--check-config", write_config(config_dir))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"listen": "9095"}, "listen: expected host:port"),
        ({"max_attempts": "lots"}, "max_attempts: expected a valid integer"),
        ({"slack_base_url": "slack.com/api"}, "slack_base_url: expected an http:// or https:// URL"),
        ({"retries": 3}, "retries: unknown key"),
        ({"routes_file": None}, "routes_file: required key is missing"),
        ({"slack_token_file": "/nonexistent/slack"}, "slack_token_file: cannot read /nonexistent/slack"),
        ({"queue_path": "/nonexistent/dir/queue.sqlite"}, "queue_path: expected a file in an existing directory"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(config_dir, changes, expected):
    result = check("--check-config", write_config(config_dir, **changes))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "relay.yaml" in result.stderr


def test_token_values_never_appear_in_errors(config_dir):
    (config_dir / "slack").write_text("")
    result = check("--check-config", write_config(config_dir))
    assert result.returncode == 2 and "slack_token_file:" in result.stderr and "is empty" in result.stderr
    (config_dir / "slack").write_text("xoxb-secret-value\n")
    (config_dir / "routes.yaml").write_text("slack: {default_channel: nowhere}\n")
    result = check("--check-config", write_config(config_dir))
    assert result.returncode == 2 and "xoxb-secret-value" not in result.stderr


@pytest.mark.parametrize(
    ("slack_section", "expected"),
    [
        ({"default_channel": "general"}, "slack.default_channel: String should match pattern"),
        ({"default_channel": "#a", "alerts": [{"match": {"alertname": "Foo("}, "channel": "#b"}]},
         "slack.alerts.0.match.alertname: expected a value or a regular expression"),
        ({"default_channel": "#a", "alerts": [{"match": {}, "channel": "#b"}]}, "slack.alerts.0.match:"),
        ({"default_channel": "#a", "faxes": [{"from": "555 010 0142", "channel": "#b"}]},
         "slack.faxes.0.from: expected an international number"),
        ({"default_channel": "#a", "faxes": [{"number": "+15550100142", "channel": "#b"}]}, "slack.faxes.0.from: required key"),
    ],
)
def test_bad_routes_are_one_line_naming_the_key(tmp_path, slack_section, expected):
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump({"slack": slack_section}))
    result = check("--check-routes", path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


@pytest.mark.parametrize("spelling", ["+1 (555) 010-0142", "+1.555.010.0142", "0015550100142", "+15550100142"])
def test_e164_normalizes_common_spellings(spelling):
    assert e164(spelling) == "+15550100142"
