"""Nothing lost, nothing doubled: Slack outages, a SIGKILLed relay, a 429 storm, dead letters.

Slack is down for 30 s, as in the issue; the relay's backoff is capped at 1 s (retry_max_s) so
recovery is seen within a second of Slack's return instead of after a long production backoff.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time

import pytest

from tests.alert_relay.conftest import RELAY, fax_webhook, notification, wait_for
from alert_relay.slack import SHARE_SETTLE_S
from tests.alert_relay.fakes import Channel

pytestmark = pytest.mark.slow


def post_numbered(relay, count: int, channels=("warning", "critical")) -> dict[str, list[int]]:
    """Post alerts Alert0..Alert<count-1>, alternating between two channels; what each channel should get."""
    expected: dict[str, list[int]] = {}
    for number in range(count):
        severity = channels[number % len(channels)]
        answer = relay.post_alerts(notification(f"Alert{number}", severity=severity))
        assert answer.status_code == 200, answer.text
        channel = "#homelab-critical" if severity == "critical" else "#homelab-alerts"
        expected.setdefault(channel, []).append(number)
    return expected


def delivered(slack) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for call in slack.calls_of("chat.postMessage"):
        number = int(re.search(r"Alert(\d+)", call.params["text"]).group(1))
        got.setdefault(call.params["channel"], []).append(number)
    return got


def wait_all_delivered(slack, expected: dict[str, list[int]], timeout: float) -> None:
    total = sum(len(numbers) for numbers in expected.values())
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= total, timeout, f"{total} messages")
    time.sleep(0.5)  # a duplicate would show up right behind the last message


def test_slack_outage_then_back_delivers_each_message_once_in_order(relay, slack):
    slack.outage(30)
    expected = post_numbered(relay, 8)
    wait_for(lambda: len(slack.refused) >= 3, 10, "attempts during the outage")
    assert not slack.calls_of("chat.postMessage")
    wait_all_delivered(slack, expected, 45)
    assert delivered(slack) == expected
    assert relay.metric("alert_relay_delivery_failures_total", 'kind="alert"') >= 3
    assert relay.metric("alert_relay_dead_letters") == 0
    assert relay.metric("alert_relay_queue_depth") == 0


def test_sigkill_with_queued_messages_loses_nothing(relay, slack):
    slack.outage(3600)
    expected = post_numbered(relay, 10)
    wait_for(lambda: slack.refused, 10, "a delivery attempt")
    relay.kill()
    slack.outage(0)
    relay.start()
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected
    # What was answered 2xx before the kill is a repeat after it: still delivered once.
    assert relay.post_alerts(notification("Alert3", severity="critical")).json()["status"] == "duplicate"


def test_sigkill_while_delivering_loses_nothing(relay, slack):
    expected = post_numbered(relay, 12)
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= 3, 10, "deliveries to start")
    relay.kill()
    relay.start()
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected


def test_429_storm_delivers_everything_paced_and_counts_no_failure(make_relay, slack):
    relay = make_relay(channel_interval_s=0.5, max_attempts=2)
    slack.storm(3, retry_after=1)
    expected = post_numbered(relay, 6, channels=("warning",))
    wait_all_delivered(slack, expected, 30)
    assert delivered(slack) == expected
    assert len(slack.refused) >= 2, "the storm did not hit"
    # max_attempts=2: had a 429 counted as a failure, messages would be dead letters by now.
    assert relay.metric("alert_relay_delivery_failures_total", 'kind="alert"') == 0
    assert relay.metric("alert_relay_dead_letters") == 0
    times = [call.at for call in slack.calls_of("chat.postMessage")]
    assert all(later - earlier >= 0.45 for earlier, later in zip(times, times[1:])), times
    # Retry-After was honoured: after each 429 nothing was sent for about a second.
    refused_at = slack.refused[0].at
    assert all(call.at - refused_at >= 0.9 for call in slack.calls_of("chat.postMessage"))


def test_message_failing_max_attempts_becomes_a_counted_dead_letter(make_relay, slack):
    relay = make_relay(max_attempts=3, retry_initial_s=0.1, retry_max_s=0.2)
    slack.outage(1.5)
    relay.post_alerts(notification("Doomed"))
    wait_for(lambda: relay.metric("alert_relay_dead_letters") == 1, 10, "the dead letter")
    assert relay.metric("alert_relay_queue_depth") == 0
    assert relay.metric("alert_relay_delivery_failures_total", 'kind="alert"') == 3
    dead = [event for event in relay.events() if event["event"] == "dead letter"]
    assert dead and dead[0]["attempts"] == 3 and "503" in dead[0]["error"]
    # The channel is not blocked behind it.
    time.sleep(1.5)
    relay.post_alerts(notification("Next"))
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the next message")
    assert "Next" in slack.calls_of("chat.postMessage")[0].params["text"]


def test_cannot_queue_answers_503_so_the_sender_retries(relay):
    holder = sqlite3.connect(relay.config["queue_path"], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the queue file
    try:
        answer = relay.post_alerts(notification("Blocked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503 and "cannot queue" in answer.json()["error"]
    assert relay.post_alerts(notification("Blocked")).json()["status"] == "queued"


def test_dead_letters_can_be_requeued_once_the_cause_is_fixed(make_relay, slack):
    relay = make_relay(max_attempts=2, retry_initial_s=0.1, retry_max_s=0.1)
    slack.outage(3600)
    relay.post_alerts(notification("Doomed"))
    wait_for(lambda: relay.metric("alert_relay_dead_letters") == 1, 10, "the dead letter")
    slack.outage(0)
    result = subprocess.run([str(RELAY), "--config", str(relay.config_path), "--requeue-dead-letters"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(p["kind"], p["channel"], p["attempts"]) for p in printed] == [("alert", "#homelab-alerts", 2)]
    relay.stop()  # a restart picks them up at once (a running relay within its idle wakeup)
    relay.start()
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the requeued message")
    assert "Doomed" in slack.calls_of("chat.postMessage")[0].params["text"]
    assert relay.metric("alert_relay_dead_letters") == 0


def test_a_misrouted_channel_waits_for_a_person_and_blocks_nothing_else(make_relay, slack):
    routes = {"slack": {"default_channel": "#homelab-alerts",
                        "alerts": [{"match": {"severity": "critical"}, "channel": "#no-such-channel"}]}}
    relay = make_relay(routes=routes, max_attempts=2, retry_initial_s=0.1, retry_max_s=0.5)
    relay.post_alerts(notification("Misrouted", severity="critical"))
    relay.post_alerts(notification("Fine"))
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the other message")
    assert "Fine" in slack.calls_of("chat.postMessage")[0].params["text"]
    wait_for(lambda: len(slack.refusals("channel_not_found")) >= 3, 10, "probes of the missing channel")
    # Not dead-lettered: creating the channel (or inviting the bot) delivers it.
    assert relay.metric("alert_relay_dead_letters") == 0 and relay.metric("alert_relay_channels_blocked") == 1
    paused = [event for event in relay.events() if event["event"].startswith("channel paused")]
    assert len(paused) == 1 and "channel_not_found" in paused[0]["reason"]
    slack.channels["#no-such-channel"] = Channel("C0000000099", "no-such-channel")
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) == 2, 10, "the message once the channel exists")
    # The fake records the call before the relay has its reply and drops the row, so wait for that too.
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 10, "the delivered message leaving the queue")


def test_sigkill_during_a_slack_call_neither_loses_nor_repeats_the_message(relay, slack):
    slack.hang_next("chat.postMessage", 30)
    relay.post_alerts(notification("CutOff"))
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "Slack to take the post")
    relay.kill()  # Slack posted it; the relay never heard back
    relay.start()
    relay.post_alerts(notification("After"))
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= 2, 10, "the next message")
    time.sleep(0.5)
    texts = [call.params["text"].split(":")[0] for call in slack.calls_of("chat.postMessage")]
    assert texts == ["[FIRING", "[FIRING"] and "CutOff" in slack.calls_of("chat.postMessage")[0].params["text"]
    assert slack.calls_of("conversations.history"), "the relay did not look before resending"
    # The recovered post is the alert's thread: its resolve updates it.
    relay.post_alerts(notification("CutOff", status="resolved"))
    update = wait_for(lambda: slack.calls_of("chat.update"), 10, "the update")[0].params
    assert update["ts"] == slack.calls_of("chat.postMessage")[0].params["ts"]


def kill_while_sharing(relay, slack, faxplus, fax_id: str) -> None:
    """SIGKILL the relay once Slack has taken a fax's share but before its answer, then start it again."""
    faxplus.add_pdf(fax_id)
    slack.hang_next("files.completeUploadExternal", 30)
    relay.post_fax(fax_webhook(fax_id))
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "Slack to take the share")
    relay.kill()
    relay.start()


def test_sigkill_during_a_fax_share_neither_loses_nor_repeats_it(relay, slack, faxplus):
    kill_while_sharing(relay, slack, faxplus, "cut")
    wait_for(lambda: slack.calls_of("conversations.history"), 10, "the relay to look before resending")
    faxplus.add_pdf("next")
    relay.post_fax(fax_webhook("next"))
    # If the relay looked before Slack showed the share, it waits out SHARE_SETTLE_S first.
    wait_for(lambda: len(slack.calls_of("files.completeUploadExternal")) >= 2, 10 + SHARE_SETTLE_S, "the next fax")
    time.sleep(0.5)
    comments = [call.params["initial_comment"] for call in slack.calls_of("files.completeUploadExternal")]
    assert len(comments) == 2 and relay.metric("alert_relay_queue_depth") == 0


def test_a_cut_off_send_that_did_not_arrive_is_sent_after_restart(relay, slack):
    slack.hang_next("chat.postMessage", 30, take_effect=False)
    relay.post_alerts(notification("Lost"))
    wait_for(lambda: slack.refused, 10, "the send to reach Slack")
    relay.kill()
    relay.start()
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message")
    time.sleep(0.5)
    assert len(slack.calls_of("chat.postMessage")) == 1
    assert "Lost" in slack.calls_of("chat.postMessage")[0].params["text"]
    assert slack.calls_of("conversations.history"), "the relay did not look before resending"
