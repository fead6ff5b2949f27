"""The relay's HTTP side: what it accepts, what it refuses, and that a repeat is delivered once."""

from __future__ import annotations

import json

import requests

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
