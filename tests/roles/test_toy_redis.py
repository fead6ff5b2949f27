"""toy-redis's rendered config, logrotate file and group data: what the server and logrotate will read."""

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from homelab.config import ConfigError, model_from_data
from homelab.types import PORT_MAX, PORT_MIN
from pydantic import BaseModel, ValidationError
from toy_redis.config import Config
from roles.toy_redis import (
    APP,
    CONFIG_CHECK,
    LOG_FILE,
    REQUIREPASS_PATH,
    RESERVED_FDS,
    Settings,
    check_maxclients_fit,
    config_values,
    render_config,
    render_logrotate,
)
from roles.tuning.settings import load_tuning
from tests.strategies import typed

REPO = Path(__file__).resolve().parents[2]
GROUP_DATA = runpy.run_path(str(REPO / "inventory" / "group_data" / "toy_redis.py"))["toy_redis"]
TUNING = load_tuning(REPO / "inventory" / "tuning.yaml")
# Every key of toy-redis's config file (its settings model), nothing else; the TLS files and the
# metrics' logins only once the role installs the cluster PKI's certificates and the hashed logins.
PKI_FILES = {"tls_cert_file", "tls_key_file", "tls_ca_cert_file", "metrics_users_file"}
CONTRACT_KEYS = set(Config.model_fields) - PKI_FILES


def test_group_data_renders_a_config_with_its_values():
    settings = model_from_data("inventory/group_data/toy_redis.py", Settings, GROUP_DATA)
    config = yaml.safe_load(render_config(settings))
    assert set(config) == CONTRACT_KEYS
    assert (config["port"], config["metrics_port"]) == (Config().port, Config().metrics_port)
    assert config["maxmemory"] == GROUP_DATA["maxmemory"]
    assert config["maxmemory_policy"] == GROUP_DATA["maxmemory_policy"]
    assert config["requirepass_file"] == REQUIREPASS_PATH
    assert config["dir"] == "/var/lib/toy-redis"
    assert config["log_file"] == LOG_FILE
    check_maxclients_fit(settings, TUNING.limits.nofile, "inventory data for worker-node-12")


def test_without_auth_no_password_file_is_configured():
    config = yaml.safe_load(render_config(Settings(auth=False)))
    assert "requirepass_file" not in config
    assert set(config) == CONTRACT_KEYS - {"requirepass_file"}


@pytest.mark.parametrize("data, message", [
    ({"maxmemory_policy": "lru"}, "toy-redis group data: maxmemory_policy: expected 'noeviction', 'allkeys-lru' or 'volatile-ttl' (got 'lru')"),
    ({"port": 70000}, "toy-redis group data: port: expected less than or equal to 65535 (got 70000)"),
    ({"appendonly": "yes"}, "toy-redis group data: appendonly: expected a valid boolean (got 'yes')"),
    ({"requirepass": "secret"}, "toy-redis group data: requirepass: unknown key"),
    ({"tls_cert_file": "/tmp/x.crt"}, "toy-redis group data: tls_cert_file: unknown key"),
    ({"metrics_port": 6379}, "toy-redis group data: metrics_port: expected a port other than port (6379), got 6379"),
    ({"bind": "worker-node-12"}, "toy-redis group data: bind: expected an IP address such as 0.0.0.0 or 127.0.0.1 (got 'worker-node-12')"),
])
def test_bad_group_data_is_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as failure:
        model_from_data("toy-redis group data", Settings, data)
    assert str(failure.value) == message


def test_maxclients_beyond_the_open_file_limit_is_refused():
    nofile = 4096
    check_maxclients_fit(Settings(maxclients=nofile - RESERVED_FDS), nofile, "here")
    with pytest.raises(ConfigError) as failure:
        check_maxclients_fit(Settings(maxclients=nofile), nofile, "inventory data for worker-node-12")
    assert str(failure.value) == (
        f"inventory data for worker-node-12: toy_redis.maxclients: expected at most {nofile - RESERVED_FDS} "
        f"(limits.nofile {nofile} from the tuning file, minus {RESERVED_FDS} for the server's own files), got {nofile}"
    )


def test_config_values_are_the_settings_and_the_role_s_paths():
    values = config_values(Settings(bind="127.0.0.1", appendfsync="always", slowlog_max_len=5))
    assert values["bind"] == "127.0.0.1" and values["appendfsync"] == "always" and values["slowlog_max_len"] == 5


def run_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The node-side check, run with this venv's toy-redis, the node's paths moved under ``tmp_path``."""
    binary = shutil.which("toy-redis", path=str(Path(sys.executable).parent))
    if not binary:
        pytest.skip("the toy-redis console script is not installed in this venv")
    for node_dir in ("/var/lib/toy-redis", "/var/log/toy-redis", "/etc/toy-redis"):
        (tmp_path / node_dir.strip("/")).mkdir(parents=True, exist_ok=True)
        config = config.replace(node_dir + "/", f"{tmp_path}{node_dir}/").replace(f" {node_dir}\n", f" {tmp_path}{node_dir}\n")
    staged = tmp_path / "toy-redis.yaml.staged"
    staged.write_text(config)
    command = CONFIG_CHECK.replace(APP.binary(), binary).format(staged=staged)
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_toy_redis_own_check_accepts_the_rendered_config_and_refuses_a_bad_one(tmp_path):
    config = render_config(model_from_data("group data", Settings, GROUP_DATA))
    # With auth on, the check needs the password file (written from the vault before the config).
    result = run_check(config, tmp_path)
    assert result.returncode == 2 and "requirepass_file" in result.stderr
    (tmp_path / REQUIREPASS_PATH.strip("/")).write_text("lab-password\n")
    result = run_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_check(config.replace("appendfsync: everysec", "appendfsync: sometimes"), tmp_path)
    assert result.returncode == 2
    assert "appendfsync" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_logrotate_signals_the_server_to_reopen_its_log():
    conf = render_logrotate(Settings(log_keep=3, log_max_size="50M"))
    assert conf.splitlines()[1] == f"{LOG_FILE} {{"
    assert "    rotate 3" in conf.splitlines() and "    maxsize 50M" in conf.splitlines()
    assert "    create 0640 toy-redis adm" in conf.splitlines()
    postrotate = conf[conf.index("postrotate"):conf.index("endscript")]
    assert "systemctl kill --kill-whom=main --signal=HUP toy-redis.service" in postrotate


@pytest.mark.skipif(not shutil.which("logrotate"), reason="needs logrotate (apt-get install logrotate)")
def test_logrotate_accepts_the_rendered_file(tmp_path):
    # The service user exists only on nodes; root stands in for it here.
    conf = render_logrotate(Settings()).replace("create 0640 toy-redis adm", "create 0640 root root")
    staged = tmp_path / "toy-redis"
    staged.write_text(conf)
    result = subprocess.run(["logrotate", "--debug", "--state", str(tmp_path / "state"), str(staged)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    staged.write_text(conf.replace("maxsize 100M", "maxsize lots"))
    result = subprocess.run(["logrotate", "--debug", "--state", str(tmp_path / "state"), str(staged)],
                            capture_output=True, text=True)
    assert result.returncode != 0


def values_of(name: str, field) -> st.SearchStrategy:
    """Values for one setting, from its type and bounds in the model (never restated here)."""
    by_type = typed(Settings, name)
    if by_type is not None:
        return by_type
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        return st.just(field.annotation())  # the deploy's own settings (container limits), not the server's
    if name in ("bind", "metrics_bind"):
        return st.sampled_from(["0.0.0.0", "127.0.0.1", "::", "10.77.0.12"])
    if name == "plain_port":
        return st.none() | st.integers(PORT_MIN, PORT_MAX)
    pattern = next(c.pattern for c in field.metadata if hasattr(c, "pattern"))
    return st.from_regex(pattern, fullmatch=True)


def accepted(data: dict) -> Settings | None:
    try:
        return Settings(**data)
    except ValidationError:
        return None


settings_accepted_here = st.fixed_dictionaries(
    {name: values_of(name, field) for name, field in Settings.model_fields.items()}
).map(accepted).filter(lambda settings: settings is not None)


@settings(max_examples=200, deadline=None)
@given(settings_accepted_here)
def test_any_group_data_the_deploy_accepts_the_server_accepts(group_settings):
    """The control machine's checks are no looser than the server's: a bad value stops the run
    before any node changes, instead of failing the node-side check half-way through a deploy."""
    toy_redis_config = pytest.importorskip("toy_redis.config")
    toy_redis_config.validate(yaml.safe_load(render_config(group_settings)), "rendered")
