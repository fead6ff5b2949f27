"""Real Alertmanager (Debian's package) notifying the relay, alerts fired and resolved with amtool."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import yaml

from tests.alert_relay.conftest import ALERTMANAGER, AM_TOKEN, AMTOOL, free_port, needs_alertmanager, wait_for

pytestmark = [needs_alertmanager, pytest.mark.slow]


class Alertmanager:
    def __init__(self, directory: Path, relay_url: str, ca_file: str | None = None):
        directory.mkdir()
        token_file = directory / "relay-token"
        token_file.write_text(AM_TOKEN + "\n")
        token_file.chmod(0o600)
        config = {
            "route": {"receiver": "relay", "group_by": ["alertname", "instance"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "relay", "webhook_configs": [{
                "url": f"{relay_url}/alertmanager", "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                                **({"tls_config": {"ca_file": ca_file}} if ca_file else {})},
            }]}],
        }
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "alertmanager.log").open("w")
        self.process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

        def ready():
            assert self.process.poll() is None, (directory / "alertmanager.log").read_text()[-2000:]
            try:
                return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 20, "Alertmanager to be ready", interval=0.2)

    def amtool_add(self, *labels: str, end: datetime | None = None) -> None:
        args = [AMTOOL, "alert", "add", *labels, f"--alertmanager.url={self.url}",
                "--annotation=summary=Host worker-node-12 is down",
                "--annotation=description=node_exporter on worker-node-12 has not answered for 2 minutes",
                "--annotation=runbook_url=https://example.invalid/runbooks/HostDown.md",
                "--generator-url=http://prometheus.example:9090/graph?g0.expr=up+%3D%3D+0"]
        if end:
            args.append(f"--end={end.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def alertmanager_for(tmp_path):
    started: list[Alertmanager] = []

    def start(relay_url: str, ca_file: str | None = None) -> Alertmanager:
        manager = Alertmanager(tmp_path / f"alertmanager{len(started)}", relay_url, ca_file)
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.stop()


def test_alert_fired_with_amtool_reaches_slack_and_its_resolve_updates_it(relay, slack, alertmanager_for):
    manager = alertmanager_for(relay.url)
    manager.amtool_add("alertname=HostDown", "instance=worker-node-12:9100", "severity=critical")
    post = wait_for(lambda: slack.calls_of("chat.postMessage"), 30, "the firing message")[0].params
    assert post["channel"] == "#homelab-critical"
    assert post["text"].startswith("[FIRING:1] HostDown (critical): Host worker-node-12 is down")
    assert "https://example.invalid/runbooks/HostDown.md" in str(post["blocks"])

    manager.amtool_add("alertname=HostDown", "instance=worker-node-12:9100", "severity=critical",
                       end=datetime.now(timezone.utc) - timedelta(seconds=1))
    update = wait_for(lambda: slack.calls_of("chat.update"), 30, "the resolve")[0].params
    assert update["ts"] == post["ts"] and update["text"].startswith("[RESOLVED] HostDown")
    replies = wait_for(lambda: [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts") == post["ts"]],
                       10, "the thread reply")
    time.sleep(3)  # Alertmanager flushes every second: any resend would arrive by now
    assert len(slack.calls_of("chat.postMessage")) == 2 and len(replies) == 1
    assert len(slack.calls_of("chat.update")) == 1


def test_alertmanager_retries_until_the_relay_is_up_and_it_is_delivered_once(make_relay, slack, alertmanager_for, tmp_path):
    port = free_port()
    manager = alertmanager_for(f"http://127.0.0.1:{port}")
    manager.amtool_add("alertname=ToyRedisDown", "instance=worker-node-12:8080", "severity=warning")
    time.sleep(3)  # Alertmanager tries and fails: nothing listens yet
    relay = make_relay(listen=f"127.0.0.1:{port}")
    post = wait_for(lambda: slack.calls_of("chat.postMessage"), 40, "the message after the relay started")
    assert post[0].params["channel"] == "#toy-redis"
    time.sleep(3)
    assert len(slack.calls_of("chat.postMessage")) == 1
    assert relay.metric("alert_relay_accepted_total", 'kind="alert"') == 1
