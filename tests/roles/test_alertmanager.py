"""Alertmanager's routing from alerts/routes.yaml: validated, checked by amtool, routed and delivered."""

from __future__ import annotations

import json
import queue
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from homelab.config import ConfigError
from roles.alertmanager import CONFIG_CHECK, Settings, render_config, render_defaults
from roles.common import REPO_ROOT, role_settings
from homelab.types import port_of
from roles.alert_relay import Settings as RelaySettings
from tests.local_http import QuietHandler, serving
from tests.roles.test_prometheus import LAB, LAB_TOPOLOGY, flag_args, free_port, topology_of

needs_amtool = pytest.mark.skipif(not shutil.which("amtool"), reason="needs Debian's prometheus-alertmanager (amtool)")
needs_alertmanager = pytest.mark.skipif(not shutil.which("prometheus-alertmanager"),
                                        reason="needs Debian's prometheus-alertmanager")
LAB_RELAY = LAB.get_group("alert_relay")[0]


def routes_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return Settings(routes_file=str(path))


def rendered(settings: Settings = Settings(), topology=LAB_TOPOLOGY) -> dict:
    return yaml.safe_load(render_config(settings, topology))


def test_repo_routes_become_the_route_tree_and_the_relay_is_the_receiver():
    source = yaml.safe_load((REPO_ROOT / "alerts" / "routes.yaml").read_text())["alertmanager"]
    config = rendered()
    route = config["route"]
    assert route["receiver"] == "alert-relay"
    assert route["group_by"] == source["group_by"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        source["group_wait"], source["group_interval"], source["repeat_interval"])
    assert [child["matchers"] for child in route["routes"]] == [
        [f'{label}="{value}"' for label, value in wanted["match"].items()] for wanted in source["routes"]
    ]
    [webhook] = next(r for r in config["receivers"] if r["name"] == "alert-relay")["webhook_configs"]
    relay_port = port_of(RelaySettings().listen)
    assert webhook["url"] == f"http://{LAB_RELAY.data.ssh_hostname}:{relay_port}/alertmanager"
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer", "credentials_file": "/etc/prometheus/alertmanager-webhook.token"}
    assert "--cluster.listen-address=" in flag_args(render_defaults(Settings()))


def test_webhook_from_group_data_and_the_relays_own_port():
    custom = Settings(webhook_url="https://relay.example/hook", webhook_token_file="/etc/relay.token")
    [webhook] = rendered(custom)["receivers"][0]["webhook_configs"]
    assert (webhook["url"], webhook["http_config"]["authorization"]["credentials_file"]) == (
        "https://relay.example/hook", "/etc/relay.token")
    relay_elsewhere = topology_of({"relay": {"alert_relay": {"listen": "0.0.0.0:9500"}}}, alert_relay=["relay"])
    assert rendered(topology=relay_elsewhere)["receivers"][0]["webhook_configs"][0]["url"] == "http://relay:9500/alertmanager"
    with pytest.raises(ConfigError) as error:
        render_config(Settings(), topology_of({"mon": {}}, alertmanager=["mon"]))
    assert str(error.value) == ("inventory/group_data/alertmanager.py: alertmanager.webhook_url: "
                                "required when the inventory has no alert_relay host")


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace("group_wait: 30s", "group_wait: soon"),
     "alertmanager.group_wait: expected a duration like 30s, 5m, 1h30m or 15d (units largest first, each once) (got 'soon')"),
    (lambda t: t.replace("repeat_interval: 1h", "repeat_intervals: 1h"),
     "alertmanager.routes.0.repeat_intervals: unknown key"),
    (lambda t: t.replace("{severity: critical}", "{severity: critical, alertname: 'Toy(Redis'}"),
     "alertmanager.routes.0.match.alertname: expected a valid regex, got 'Toy(Redis'"),
    (lambda t: t.replace("{severity: critical}", "{}"),
     "alertmanager.routes.0.match: expected at least one label: value pair"),
    (lambda t: t.replace("{severity: warning}", "{severity: warning}\n      receiver: pager"),
     "alertmanager.routes.1.receiver: expected 'alert-relay' or 'blackhole' (got 'pager')"),
    (lambda t: t.replace("alertmanager:", "alertmanagr:", 1), "alertmanager: required key is missing"),
    (lambda t: t.replace("group_by: [alertname, instance]", "group_by: [alertname, instance"), "line "),
])
def test_a_broken_routes_file_is_one_line_naming_the_file_and_key(tmp_path, edit, expected):
    settings = routes_file(tmp_path, edit((REPO_ROOT / "alerts" / "routes.yaml").read_text()))
    with pytest.raises(ConfigError) as error:
        render_config(settings, LAB_TOPOLOGY)
    message = str(error.value)
    assert message.startswith(f"{settings.routes_file}: {expected}"), message
    assert "\n" not in message


def test_bad_settings_give_one_line_errors_naming_the_key():
    from pyinfra.context import ctx_host

    with ctx_host.use(LAB.get_group("alertmanager")[0]):
        with pytest.raises(ConfigError) as error:
            role_settings("alertmanager", Settings, {"webhook_token_file": "relative.token"})
    assert str(error.value).startswith("inventory data for worker-node-14: alertmanager.webhook_token_file: ")


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


@needs_amtool
def test_amtool_accepts_the_config_and_routes_labels_as_the_file_says(tmp_path):
    settings = routes_file(tmp_path, """
alertmanager:
  group_by: [alertname]
  routes:
    - match: {alertname: "Watchdog|Heartbeat"}
      receiver: blackhole
    - match: {alertname: "ToyRedis.*", severity: critical}
      repeat_interval: 15m
slack: {default_channel: "#x"}
""")
    staged = tmp_path / "alertmanager.yml.staged"
    staged.write_text(render_config(settings, LAB_TOPOLOGY))
    check = subprocess.run(["sh", "-c", CONFIG_CHECK.format(staged=shlex.quote(str(staged)))],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    def receiver(*labels: str) -> str:
        return amtool("config", "routes", "test", f"--config.file={staged}", *labels).stdout.strip()

    assert receiver("alertname=Watchdog") == "blackhole"
    assert receiver("alertname=WatchdogX") == "alert-relay"  # regex matches the whole value
    assert receiver("alertname=ToyRedisDown", "severity=critical") == "alert-relay"
    tree = amtool("config", "routes", f"--config.file={staged}").stdout
    assert '{alertname=~"ToyRedis.*",severity="critical"}  receiver: alert-relay' in tree

    staged.write_text(staged.read_text().replace('"receiver": "blackhole"', '"receiver": "nobody"'))
    check = subprocess.run(["sh", "-c", CONFIG_CHECK.format(staged=shlex.quote(str(staged)))],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "nobody" in check.stdout + check.stderr


class _Webhook(QuietHandler):
    received: queue.Queue = queue.Queue()

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()


@needs_alertmanager
def test_alertmanager_delivers_a_firing_alert_to_the_webhook_with_the_bearer_token(tmp_path):
    with serving(_Webhook) as webhook:
        token = tmp_path / "webhook.token"
        token.write_text("s3cret-token\n")
        token.chmod(0o600)
        settings = Settings(
            routes_file=str(tmp_path / "routes.yaml"),
            webhook_url=f"http://127.0.0.1:{webhook.server_port}/alertmanager",
            webhook_token_file=str(token),
        )
        Path(settings.routes_file).write_text("alertmanager:\n  group_wait: 0s\n  group_by: [alertname]\n"
                                              "  routes:\n    - match: {severity: critical}\n")
        process, url = _running_alertmanager(tmp_path, settings, render_config(settings, LAB_TOPOLOGY))
        try:
            alert = [{"labels": {"alertname": "ToyRedisDown", "severity": "critical", "instance": "worker-node-12:8080"},
                      "annotations": {"summary": "toy-redis is down"}}]
            _post_until_accepted(process, url, alert)
            path, authorization, payload = _Webhook.received.get(timeout=30)
            assert path == "/alertmanager"
            assert authorization == "Bearer s3cret-token"
            assert payload["status"] == "firing"
            assert payload["alerts"][0]["labels"]["alertname"] == "ToyRedisDown"

            # Above critical, both levels of a two-level alert fire; the warning must be inhibited.
            twins = [{"labels": {"alertname": "HostMemoryHigh", "severity": severity, "instance": "worker-node-12:9100"}}
                     for severity in ("critical", "warning")]
            assert requests.post(f"{url}/api/v2/alerts", json=twins, timeout=5).ok
            deadline = time.monotonic() + 20
            while True:
                states = {a["labels"]["severity"]: a["status"]["state"] for a in requests.get(
                    f"{url}/api/v2/alerts", params={"filter": 'alertname="HostMemoryHigh"'},
                    timeout=5).json()}
                if states == {"critical": "active", "warning": "suppressed"}:
                    break
                assert time.monotonic() < deadline, f"warning not inhibited by its critical twin: {states}"
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=30)


# --- recurring maintenance windows (alerts/maintenance.yaml) ---------------------------------------

def maintenance_file(tmp_path: Path, text: str, **settings) -> Settings:
    path = tmp_path / "maintenance.yaml"
    path.write_text(text)
    return Settings(maintenance_file=str(path), **settings)


WINDOW = """
windows:
  patching:
    nodes: [worker-node-12]
    location: Europe/Berlin
    times:
      - weekdays: [saturday]
        times: [{start_time: "02:00", end_time: "04:00"}]
"""


def test_the_repo_maintenance_file_is_valid_and_adds_nothing_while_empty():
    config = rendered()
    assert "time_intervals" not in config
    assert all("mute_time_intervals" not in route for route in config["route"]["routes"])


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace("worker-node-12", "worker-node-99"),
     "windows.patching.nodes.0: expected an inventory host (master-node, worker-node-11, worker-node-12, "
     "worker-node-14), got 'worker-node-99'"),
    (lambda t: t + t.replace("windows:\n", "").replace("patching", "again"),
     "windows.again.nodes.0: worker-node-12 is already in window 'patching'"),
    (lambda t: t.replace("[saturday]", "[caturday]"),
     "windows.patching.times.0.weekdays.0: expected a weekday name or a range of them (start:end), got 'caturday'"),
    (lambda t: t.replace("[saturday]", "[\"saturday:monday\"]"),
     "windows.patching.times.0.weekdays.0: expected a weekday name or a range of them"),
    (lambda t: t.replace('"04:00"', '"01:00"'),
     "windows.patching.times.0.times.0.end_time: expected a time after start_time 02:00, got '01:00'"),
    (lambda t: t.replace('"02:00"', '"2am"'), "windows.patching.times.0.times.0.start_time: "),
    (lambda t: t.replace("Europe/Berlin", "Mars/Olympus"),
     "windows.patching.location: expected an IANA time zone like UTC or Europe/Berlin, got 'Mars/Olympus'"),
    (lambda t: t.replace("weekdays:", "weekday:"), "windows.patching.times.0.weekday: unknown key"),
    (lambda t: t.replace("patching:", "patching now:"), "windows.patching now: "),
    (lambda t: t.replace("    times:\n", "    times: []\n    x:\n"), "windows.patching."),
])
def test_a_broken_maintenance_file_is_one_line_naming_the_file_and_key(tmp_path, edit, expected):
    settings = maintenance_file(tmp_path, edit(WINDOW))
    with pytest.raises(ConfigError) as error:
        render_config(settings, LAB_TOPOLOGY)
    message = str(error.value)
    assert message.startswith(f"{settings.maintenance_file}: {expected}"), message
    assert "\n" not in message


@needs_amtool
def test_a_window_routes_its_nodes_alerts_as_before_muted_by_its_interval(tmp_path):
    settings = maintenance_file(tmp_path, WINDOW)
    staged = tmp_path / "alertmanager.yml.staged"
    staged.write_text(render_config(settings, LAB_TOPOLOGY))
    check = subprocess.run(["sh", "-c", CONFIG_CHECK.format(staged=shlex.quote(str(staged)))],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(staged.read_text())
    assert config["time_intervals"] == [{"name": "patching", "time_intervals": [
        {"weekdays": ["saturday"], "times": [{"start_time": "02:00", "end_time": "04:00"}], "location": "Europe/Berlin"}]}]

    def path(*labels: str) -> str:
        return amtool("config", "routes", "test", f"--config.file={staged}", "--tree", *labels).stdout

    node = LAB_TOPOLOGY.endpoint("node_exporter", "worker-node-12", "metrics").instance
    other = LAB_TOPOLOGY.endpoint("node_exporter", "worker-node-11", "metrics").instance
    assert "worker\\\\-node\\\\-12" in path(f"instance={node}", "severity=critical")
    assert "worker\\\\-node\\\\-12" in path("instance=http://worker-node-12:8080/healthz", "severity=critical")
    assert "worker\\\\-node\\\\-12" not in path(f"instance={other}", "severity=critical")
    # Every route an alert of the window can end on is muted: Alertmanager does not inherit mutes.
    [node_route, service_route, *rest] = config["route"]["routes"]
    assert service_route["matchers"] == ['job="toy-redis"', 'instance=""']  # toy-redis runs only there
    for route in (node_route, service_route):
        assert route["mute_time_intervals"] == ["patching"]
        assert [child["mute_time_intervals"] for child in route["routes"]] == [["patching"]] * len(rest)
        assert [{k: v for k, v in child.items() if k != "mute_time_intervals"} for child in route["routes"]] == rest


def _running_alertmanager(tmp_path: Path, settings: Settings, config_text: str):
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_text)
    port = free_port()
    args = [arg for arg in flag_args(render_defaults(settings))
            if not arg.startswith(("--config.file", "--storage.path", "--web.listen-address"))]
    process = subprocess.Popen(
        ["prometheus-alertmanager", *args, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def _post_until_accepted(process: subprocess.Popen, url: str, alerts: list[dict]) -> None:
    """Post alerts as soon as the starting Alertmanager takes them (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "alertmanager did not start"
        time.sleep(0.2)


@needs_alertmanager
def test_alertmanager_mutes_an_alert_inside_its_window_and_not_outside(tmp_path):
    from datetime import datetime, timedelta, timezone

    from roles.alertmanager.maintenance_windows import WEEKDAYS

    now = datetime.now(timezone.utc)
    today, yesterday = (WEEKDAYS[(moment.weekday() + 1) % 7] for moment in (now, now - timedelta(days=1)))
    windows = f"""
windows:
  open-now:
    nodes: [worker-node-12]
    times: [{{weekdays: [{today}]}}]
  closed-now:
    nodes: [worker-node-11]
    times: [{{weekdays: [{yesterday}]}}]
"""
    received: queue.Queue = queue.Queue()

    class Webhook(QuietHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put(json.loads(body))
            self.send_response(200)
            self.end_headers()

    with serving(Webhook) as webhook:
        token = tmp_path / "webhook.token"
        token.write_text("s3cret-token\n")
        settings = maintenance_file(tmp_path, windows, routes_file=str(tmp_path / "routes.yaml"),
                                    webhook_url=f"http://127.0.0.1:{webhook.server_port}/alertmanager",
                                    webhook_token_file=str(token))
        Path(settings.routes_file).write_text("alertmanager:\n  group_wait: 0s\n  group_interval: 1s\n"
                                              "  group_by: [alertname, instance]\n"
                                              "  routes:\n    - match: {severity: critical}\n")
        process, url = _running_alertmanager(tmp_path, settings, render_config(settings, LAB_TOPOLOGY))
        try:
            muted = LAB_TOPOLOGY.endpoint("node_exporter", "worker-node-12", "metrics").instance
            sent = LAB_TOPOLOGY.endpoint("node_exporter", "worker-node-11", "metrics").instance
            alerts = [{"labels": {"alertname": "HostDown", "severity": "critical", "instance": instance}}
                      for instance in (muted, sent)]
            _post_until_accepted(process, url, alerts)
            first = received.get(timeout=30)
            assert [alert["labels"]["instance"] for alert in first["alerts"]] == [sent]
            # Several group intervals later, the alert inside its window has still not been sent.
            time.sleep(3)
            later = [alert["labels"]["instance"] for payload in iter(lambda: None if received.empty() else received.get(), None)
                     for alert in payload["alerts"]]
            assert muted not in later
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_alerts_check_validates_the_maintenance_file_against_the_inventory(tmp_path, capsys):
    from homelab.alerts.cli import main as alerts_main

    assert alerts_main(["check"]) == 0
    assert "alerts/maintenance.yaml: OK, 0 recurring maintenance windows" in capsys.readouterr().out
    settings = maintenance_file(tmp_path, WINDOW.replace("worker-node-12", "worker-node-99"))
    assert alerts_main(["check", "--maintenance", settings.maintenance_file]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{settings.maintenance_file}: windows.patching.nodes.0: expected an inventory host") and err.count("\n") == 1
