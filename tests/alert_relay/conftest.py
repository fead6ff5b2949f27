"""The relay as a real process, between a fake Slack, a fake FAX.PLUS and (for some tests) a real Alertmanager."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack
from tests.loopback import free_port, wait_for  # noqa: F401 (free_port: imported from here by relay tests)

RELAY = Path(sys.executable).parent / "alert-relay"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"

SLACK_TOKEN = "xoxb-test-relay-token"
FAXPLUS_TOKEN = "faxplus-test-token"
AM_TOKEN = "alertmanager-test-token"
FAX_HOOK_TOKEN = "fax-hook-test-token"

CHANNELS = {
    "#homelab-alerts": "C0000000001",
    "#homelab-critical": "C0000000002",
    "#toy-redis": "C0000000003",
    "#vendor-faxes": "C0000000004",
}

ROUTES = {
    "alertmanager": {"group_by": ["alertname", "instance"]},
    "slack": {
        "default_channel": "#homelab-alerts",
        "alerts": [
            {"match": {"severity": "critical"}, "channel": "#homelab-critical"},
            {"match": {"alertname": "ToyRedis.*"}, "channel": "#toy-redis"},
        ],
        "faxes": [{"from": "+1 (555) 010-0142", "channel": "#vendor-faxes"}],
    },
}


class Relay:
    """alert-relay run as its own process from a config in ``directory``; restartable on the same queue."""

    def __init__(self, directory: Path, slack: FakeSlack, faxplus: FakeFaxPlus, routes: dict | None = None,
                 **overrides: Any):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        tokens = {
            "slack_token_file": SLACK_TOKEN, "faxplus_token_file": FAXPLUS_TOKEN,
            "alertmanager_token_file": AM_TOKEN, "fax_webhook_token_file": FAX_HOOK_TOKEN,
        }
        for key, value in tokens.items():
            path = directory / key.removesuffix("_file")
            path.write_text(value + "\n")
            path.chmod(0o600)
        (directory / "routes.yaml").write_text(yaml.safe_dump(routes or ROUTES))
        self.config = {
            "listen": "127.0.0.1:0",
            "routes_file": str(directory / "routes.yaml"),
            "queue_path": str(directory / "queue.sqlite"),
            **{key: str(directory / key.removesuffix("_file")) for key in tokens},
            "slack_base_url": slack.base_url,
            "faxplus_base_url": faxplus.base_url,
            "alertmanager_url": "http://alertmanager.example:9093",
            "max_body_bytes": 65536,
            "max_attempts": 50,
            "retry_initial_s": 0.1,
            "retry_max_s": 1.0,
            "channel_interval_s": 0.2,
            **overrides,
        }
        self.config_path = directory / "relay.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.directory / f"relay-{self.runs}.log"

    def start(self) -> "Relay":
        self.runs += 1
        self.process = subprocess.Popen(
            [str(RELAY), "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("w"),
        )

        def listening():
            if self.process.poll() is not None:
                raise AssertionError(f"relay exited {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            for event in self.events(run=self.runs):
                if event["event"] == "listening":
                    return event["port"]
            return None

        try:
            port = wait_for(listening, 15, "the relay to listen")
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise
        self.url = f"{'https' if self.config.get('web_config_file') else 'http'}://127.0.0.1:{port}"
        return self

    def events(self, run: int | None = None) -> list[dict[str, Any]]:
        """JSON log lines of one run of the process, or of all its runs."""
        events = []
        for run in [run] if run else range(1, self.runs + 1):
            for line in (self.directory / f"relay-{run}.log").read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    events.append({"event": "unparsed", "line": line})
        return events

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode if self.process else 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def post_alerts(self, payload: dict, token: str = AM_TOKEN) -> requests.Response:
        return requests.post(f"{self.url}/alertmanager", json=payload, timeout=10,
                             headers={"Authorization": f"Bearer {token}"})

    def post_fax(self, payload: dict, token: str = FAX_HOOK_TOKEN) -> requests.Response:
        return requests.post(f"{self.url}/fax/{token}", json=payload, timeout=10)

    def metric(self, name: str, labels: str = "") -> float:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{wanted} not in /metrics")


@pytest.fixture
def slack():
    fake = FakeSlack(SLACK_TOKEN, CHANNELS).start()
    yield fake
    fake.close()


@pytest.fixture
def faxplus():
    fake = FakeFaxPlus(FAXPLUS_TOKEN).start()
    yield fake
    fake.close()


@pytest.fixture
def make_relay(tmp_path, slack, faxplus):
    """make_relay(routes=None, **config overrides) -> a started Relay; every one is killed at the end."""
    relays: list[Relay] = []

    def make(routes: dict | None = None, **overrides: Any) -> Relay:
        relay = Relay(tmp_path / f"relay{len(relays)}", slack, faxplus, routes, **overrides)
        relays.append(relay)
        return relay.start()

    yield make
    for relay in relays:
        if relay.process and relay.process.poll() is None:
            relay.process.kill()
            relay.process.wait()


@pytest.fixture
def relay(make_relay) -> Relay:
    return make_relay()


def notification(alertname: str = "HostDown", status: str = "firing", *, instance: str = "worker-node-12:9100",
                 severity: str = "warning", fingerprint: str | None = None, starts_at: str = "2024-05-01T10:00:00Z",
                 **extra_labels: str) -> dict[str, Any]:
    """An Alertmanager webhook payload (version 4) with one alert, as Alertmanager sends it."""
    labels = {"alertname": alertname, "instance": instance, "severity": severity, **extra_labels}
    annotations = {
        "summary": f"{alertname} on {instance}",
        "description": f"{alertname} has been firing on {instance} for 5 minutes.",
        "runbook_url": f"https://example.invalid/runbooks/{alertname}.md",
    }
    alert = {
        "status": status, "labels": labels, "annotations": annotations, "startsAt": starts_at,
        "endsAt": "2024-05-01T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus.example:9090/graph?g0.expr=up%7Balertname%3D%22{alertname}%22%7D",
        "fingerprint": fingerprint or f"{abs(hash((alertname, instance))):016x}",
    }
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}", instance="{instance}"}}', "truncatedAlerts": 0,
        "status": status, "receiver": "relay", "groupLabels": {"alertname": alertname, "instance": instance},
        "commonLabels": labels, "commonAnnotations": annotations, "externalURL": "http://alertmanager.example:9093",
        "alerts": [alert],
    }


def fax_webhook(fax_id: str, sender: str = "+15550100142", hook_id: str = "hook-1", **data: Any) -> dict[str, Any]:
    """A FAX.PLUS "fax_received" webhook payload."""
    return {
        "hook": {"id": hook_id, "event": "fax_received", "event_time": "2024-05-01 10:00:00",
                 "target": "https://relay.example/fax/token"},
        "data": {"id": fax_id, "uid": "user-1", "pages": 2, "from": sender, "to": "+15550109999",
                 "start_time": "2024-05-01 09:59:12", "file": f"{fax_id}-file", "file_name": f"{fax_id}.tiff",
                 "cost": 0, "status": "success", **data},
    }


needs_alertmanager = pytest.mark.skipif(
    not (os.path.exists(ALERTMANAGER) and os.path.exists(AMTOOL)),
    reason="needs Debian's prometheus-alertmanager (alertmanager and amtool)",
)
