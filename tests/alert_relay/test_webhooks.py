"""The relay's HTTP side: what it accepts, what it refuses, and that a repeat is delivered once."""

from __future__ import annotations

import json
import time

import requests

from tests.alert_relay.fakes import SlackLimits
from tests.alert_relay.conftest import AM_TOKEN, notification, wait_for


def test_firing_alert_arrives_in_its_routed_channel_as_block_kit(relay, slack):
    answer = relay.post_alerts(notification("HostDown", severity="critical"))
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    posts = wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the Slack message")
    message = posts[0].params
    assert message["channel"] == "#homelab-critical"
    assert message["text"].startswith("[FIRING:1] HostDown (critical)")  # fallback for notifications
    shown = json.dumps(message["blocks"])
    assert "HostDown on worker-node-12:9100" in shown  # summary
    assert "has been firing on worker-node-12:9100 for 5 minutes" in shown  # description
    assert "https://example.invalid/runbooks/HostDown.md" in shown
    assert "http://prometheus.example:9090/graph" in shown
    assert "http://alertmanager.example:9093/#/silences/new?filter=" in shown
    assert "severity=critical" in shown


def test_resolve_updates_the_original_and_replies_in_its_thread(relay, slack):
    relay.post_alerts(notification("ToyRedisDown"))
    first = wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the firing message")[0].params
    assert first["channel"] == "#toy-redis"
    relay.post_alerts(notification("ToyRedisDown", status="resolved"))
    update = wait_for(lambda: slack.calls_of("chat.update"), 10, "the update")[0].params
    assert (update["channel"], update["ts"]) == (first["channel_id"], first["ts"])
    assert update["text"].startswith("[RESOLVED] ToyRedisDown")
    reply = wait_for(lambda: [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts")], 10, "the reply")
    assert reply[0].params["thread_ts"] == first["ts"] and "Resolved" in reply[0].params["text"]
    # The group is closed: firing again later starts a new message, not a reply to the old thread.
    relay.post_alerts(notification("ToyRedisDown", starts_at="2024-05-01T12:00:00Z"))
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) == 3, 10, "a new firing message")
    assert "thread_ts" not in slack.calls_of("chat.postMessage")[2].params


def test_alertmanager_resends_are_delivered_once(relay, slack):
    payload = notification("DiskFull")
    answers = [relay.post_alerts(payload).json()["status"] for _ in range(3)]
    assert answers == ["queued", "duplicate", "duplicate"]
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message")
    relay.post_alerts(notification("Other"))  # a later message proves the repeats had their chance
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) == 2, 10, "the second message")
    assert [c.params["text"].split(":")[0] for c in slack.calls_of("chat.postMessage")] == ["[FIRING", "[FIRING"]
    assert sum("DiskFull" in c.params["text"] for c in slack.calls_of("chat.postMessage")) == 1
    assert relay.metric("alert_relay_duplicates_total", 'kind="alert"') == 2


def test_bad_requests_are_refused_with_their_reason_and_queue_nothing(relay, slack):
    url = f"{relay.url}/alertmanager"
    auth = {"Authorization": f"Bearer {AM_TOKEN}"}
    wrong = requests.post(url, json=notification(), headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    missing = requests.post(url, json=notification(), timeout=5)
    assert missing.status_code == 401
    malformed = requests.post(url, data=b'{"version": "4", "alerts": [', headers=auth, timeout=5)
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    old = requests.post(url, json={**notification(), "version": "3"}, headers=auth, timeout=5)
    assert old.status_code == 400 and "unknown payload version '3'" in old.json()["error"]
    no_alerts = requests.post(url, json={**notification(), "alerts": []}, headers=auth, timeout=5)
    assert no_alerts.status_code == 400 and "alerts" in no_alerts.json()["error"]
    huge = requests.post(url, data=b"x" * 70000, headers=auth, timeout=5)
    assert huge.status_code == 413
    assert requests.post(f"{relay.url}/fax/not-the-token", json={}, timeout=5).status_code == 401
    assert requests.post(f"{relay.url}/elsewhere", json={}, timeout=5).status_code == 404

    assert relay.metric("alert_relay_queue_depth") == 0
    assert relay.metric("alert_relay_accepted_total", 'kind="alert"') == 0
    # The fax hook's token is in its URL: it must not reach the logs.
    assert "not-the-token" not in (relay.log_path.read_text())
    assert not slack.calls


def test_health_and_metrics(relay):
    health = requests.get(f"{relay.url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    text = requests.get(f"{relay.url}/metrics", timeout=5).text
    for name in ("alert_relay_queue_depth", "alert_relay_dead_letters", 'alert_relay_delivered_total{kind="fax"}',
                 'alert_relay_delivery_failures_total{kind="alert"}', 'alert_relay_accepted_total{kind="alert"}',
                 "process_resident_memory_bytes"):
        assert name in text, name


def test_sigterm_exits_zero(relay):
    assert relay.stop() == 0


def group_of(*alerts: dict, status: str = "firing") -> dict:
    """One Alertmanager group notification holding the alerts of several single-alert payloads."""
    payload = notification("DiskFull", instance="all")
    payload.update(status=status, groupKey='{}:{alertname="DiskFull"}', groupLabels={"alertname": "DiskFull"},
                   commonLabels={"alertname": "DiskFull"}, commonAnnotations={})
    payload["alerts"] = [a["alerts"][0] for a in alerts]
    return payload


def test_a_group_routed_to_two_channels_is_one_thread_per_channel(relay, slack):
    node12 = notification("DiskFull", instance="worker-node-12:9100", severity="critical")
    node14 = notification("DiskFull", instance="worker-node-14:9100", severity="warning")
    relay.post_alerts(group_of(node12, node14))
    posts = wait_for(lambda: len(slack.calls_of("chat.postMessage")) == 2 and slack.calls_of("chat.postMessage"),
                     10, "a message per channel")
    by_channel = {call.params["channel"]: json.dumps(call.params["blocks"]) for call in posts}
    assert set(by_channel) == {"#homelab-critical", "#homelab-alerts"}
    assert "worker-node-12" in by_channel["#homelab-critical"] and "worker-node-14" not in by_channel["#homelab-critical"]
    assert "worker-node-14" in by_channel["#homelab-alerts"] and "worker-node-12" not in by_channel["#homelab-alerts"]

    # node 14 recovers: only its channel's message changes, with a reply saying so.
    resolved14 = notification("DiskFull", instance="worker-node-14:9100", severity="warning", status="resolved")
    relay.post_alerts(group_of(node12, resolved14))
    update = wait_for(lambda: slack.calls_of("chat.update"), 10, "the update")[0].params
    first14 = next(call.params for call in posts if call.params["channel"] == "#homelab-alerts")
    assert update["ts"] == first14["ts"] and update["text"].startswith("[RESOLVED] DiskFull")
    reply = wait_for(lambda: [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts")], 10, "reply")
    assert reply[0].params["thread_ts"] == first14["ts"]
    time.sleep(0.5)
    assert len(slack.calls_of("chat.update")) == 1  # the critical channel's message stands unchanged


def test_an_alert_joining_an_open_group_updates_its_message_and_says_so_in_the_thread(relay, slack):
    node12 = notification("DiskFull", instance="worker-node-12:9100")
    node14 = notification("DiskFull", instance="worker-node-14:9100")
    relay.post_alerts(group_of(node12))
    first = wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the first message")[0].params
    relay.post_alerts(group_of(node12, node14))
    update = wait_for(lambda: slack.calls_of("chat.update"), 10, "the update")[0].params
    assert update["ts"] == first["ts"] and update["text"].startswith("[FIRING:2] DiskFull")
    assert "worker-node-14" in json.dumps(update["blocks"])
    reply = wait_for(lambda: [c for c in slack.calls_of("chat.postMessage") if c.params.get("thread_ts")], 10, "reply")
    assert "Now 2 firing" in reply[0].params["text"]


def test_a_large_group_stays_within_slack_block_limits(make_relay, slack):
    relay = make_relay(max_body_bytes=1 << 20)
    alerts = [notification("DiskFull", instance=f"node-{n}:9100") for n in range(60)]
    for alert in alerts:
        alert["alerts"][0]["annotations"]["description"] = "d" * 5000
    relay.post_alerts(group_of(*alerts))
    message = wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message")[0].params
    # The strict fake took it: per-block limits and the ~12k total of bolt-js #2509 both hold.
    assert SlackLimits.check_message(message["text"], message["blocks"]) is None
    shown = sum(1 for block in message["blocks"] if "firing* since" in json.dumps(block))
    assert 1 <= shown < 60 and f"and {60 - shown} more alerts" in json.dumps(message["blocks"])


def test_alert_text_is_shown_literally_and_times_in_the_readers_zone(relay, slack):
    payload = notification("FreeMemoryLow", starts_at="2024-05-01T12:00:00.123456789+02:00")
    payload["commonAnnotations"]["description"] = "available <10% & falling; see <http://evil|here>"
    payload["alerts"][0]["annotations"] = payload["commonAnnotations"]
    relay.post_alerts(payload)
    blocks = json.dumps(wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message")[0].params["blocks"])
    assert "available &lt;10% &amp; falling; see &lt;http://evil|here&gt;" in blocks
    assert "<http://evil|here>" not in blocks
    assert "<!date^1714557600^" in blocks  # 10:00 UTC, whatever offset Alertmanager wrote
