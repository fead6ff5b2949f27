"""Slack and FAX.PLUS as they really behave (issue 19), against the strict fakes: every fault ends with
nothing lost, nothing doubled, and nothing dead-lettered for a cause a person can fix."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from alert_relay.slack import AuthFailed, ChannelBlocked, MaybeArrived, PermanentError, RateLimited, Slack
from tests.alert_relay.conftest import (
    CHANNELS, RELAY, SLACK_TOKEN, Relay, fax_webhook, notification, wait_for,
)
from tests.alert_relay.fakes import FakeFaxPlus, SlackLimits
from tests.alert_relay.test_faults import delivered, kill_while_sharing, post_numbered, wait_all_delivered

pytestmark = pytest.mark.slow


def classify(error: str, status: int = 200, **extra) -> Exception:
    response = SlackResponse(client=None, http_verb="POST", api_url="http://slack.invalid/api/chat.postMessage",
                             req_args={}, data={"ok": False, "error": error, **extra}, headers={}, status_code=status)
    return Slack._classify(SlackApiError("refused", response), "#homelab-alerts")


@pytest.mark.parametrize("error, kind", [
    ("invalid_auth", AuthFailed), ("token_revoked", AuthFailed), ("missing_scope", AuthFailed),
    ("account_inactive", AuthFailed), ("not_authed", AuthFailed),
    ("not_in_channel", ChannelBlocked), ("is_archived", ChannelBlocked), ("channel_not_found", ChannelBlocked),
    ("restricted_action_read_only_channel", ChannelBlocked), ("restricted_action_thread_only_channel", ChannelBlocked),
    ("msg_blocks_too_long", PermanentError), ("invalid_blocks", PermanentError), ("msg_too_long", PermanentError),
    ("rate_limited", RateLimited), ("ratelimited", RateLimited), ("fatal_error", MaybeArrived),
])
def test_each_slack_error_is_handled_as_its_cause_requires(error, kind):
    assert isinstance(classify(error), kind)


def test_the_fake_refuses_blocks_each_within_limits_but_too_long_together():
    # bolt-js #2509: each section under 3000 characters, the message refused as a whole.
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2900}} for _ in range(5)]
    assert SlackLimits.check_message("t", blocks) == "msg_blocks_too_long"
    assert SlackLimits.check_message("t", blocks[:4]) is None
    assert SlackLimits.check_message("t", [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]) == "invalid_blocks"


def write_token(relay: Relay, token: str) -> None:
    path = relay.directory / "slack_token"
    path.write_text(token + "\n")
    path.chmod(0o600)


def test_a_revoked_token_pauses_every_channel_then_the_backlog_flows_in_order(make_relay, slack):
    relay = make_relay(max_attempts=2, retry_initial_s=0.1, retry_max_s=0.5)
    slack.revoke(SLACK_TOKEN)
    expected = post_numbered(relay, 8)
    wait_for(lambda: len(slack.refusals("token_revoked")) >= 3, 10, "probes with the revoked token")
    assert relay.metric("alert_relay_delivery_paused", 'service="slack"') == 1
    assert relay.metric("alert_relay_queue_depth") == 8 and relay.metric("alert_relay_dead_letters") == 0
    assert relay.metric("alert_relay_delivery_failures_total", 'kind="alert"') == 0  # max_attempts=2 not spent
    paused = [e for e in relay.events() if e["event"].startswith("delivery paused for every channel")]
    assert len(paused) == 1 and "token_revoked" in paused[0]["reason"]
    # The person puts a new token in the file; the relay reads it on its next probe, no restart.
    slack.set_token("xoxb-new-token")
    write_token(relay, "xoxb-new-token")
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected
    assert relay.metric("alert_relay_delivery_paused", 'service="slack"') == 0
    assert relay.metric("alert_relay_dead_letters") == 0


def test_a_missing_scope_pauses_delivery_and_names_the_scope_until_it_is_granted(make_relay, slack):
    relay = make_relay(max_attempts=2, retry_initial_s=0.1, retry_max_s=0.5)
    slack.set_token(SLACK_TOKEN, scopes={"channels:read", "channels:history"})
    expected = post_numbered(relay, 4)
    wait_for(lambda: len(slack.refusals("missing_scope")) >= 2, 10, "refusals")
    paused = [e for e in relay.events() if e["event"].startswith("delivery paused")]
    assert paused and "missing_scope (needs chat:write)" in paused[0]["reason"]
    assert relay.metric("alert_relay_dead_letters") == 0
    slack.set_token(SLACK_TOKEN)  # the app reinstalled with the scope: same token, now allowed
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected and relay.metric("alert_relay_dead_letters") == 0


def test_rate_limited_in_an_http_200_answer_paces_and_counts_no_failure(make_relay, slack):
    relay = make_relay(max_attempts=2)
    slack.rate_limit_in_body(2)
    expected = post_numbered(relay, 4, channels=("warning",))
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected and slack.refusals("rate_limited")
    assert relay.metric("alert_relay_delivery_failures_total", 'kind="alert"') == 0
    assert relay.metric("alert_relay_dead_letters") == 0


@pytest.mark.parametrize("fault", ["restricted_action_read_only_channel", "not_in_channel", "is_archived"])
def test_a_channel_only_a_person_can_fix_waits_alone_and_loses_nothing(make_relay, slack, fault):
    relay = make_relay(max_attempts=2, retry_initial_s=0.1, retry_max_s=0.5)
    critical = slack.channel("#homelab-critical")
    if fault == "not_in_channel":
        critical.member = False
    elif fault == "is_archived":
        critical.archived = True
    else:
        critical.restriction = fault
    expected = post_numbered(relay, 6)
    wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= 3, 10, "the other channel's messages")
    wait_for(lambda: len(slack.refusals(fault)) >= 2, 10, "probes of the blocked channel")
    assert relay.metric("alert_relay_channels_blocked") == 1 and relay.metric("alert_relay_dead_letters") == 0
    assert delivered(slack) == {"#homelab-alerts": expected["#homelab-alerts"]}
    critical.member, critical.archived, critical.restriction = True, False, None  # fixed by a person
    wait_all_delivered(slack, expected, 20)
    assert delivered(slack) == expected
    assert relay.metric("alert_relay_channels_blocked") == 0 and relay.metric("alert_relay_dead_letters") == 0


def test_no_thread_replies_allowed_the_update_alone_delivers_the_resolve(relay, slack):
    slack.channel("#homelab-alerts").restriction = "restricted_action_non_threadable_channel"
    relay.post_alerts(notification("Flappy"))
    post = wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message")[0].params
    relay.post_alerts(notification("Flappy", status="resolved"))
    update = wait_for(lambda: slack.calls_of("chat.update"), 10, "the update")[0].params
    assert update["ts"] == post["ts"] and update["text"].startswith("[RESOLVED]")
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 10, "the resolve to count as delivered")
    assert relay.metric("alert_relay_dead_letters") == 0


def test_fatal_error_may_have_posted_so_the_relay_looks_before_sending_again(relay, slack):
    slack.fatal["chat.postMessage"] = 1  # takes effect, answers fatal_error
    relay.post_alerts(notification("Partial"))
    wait_for(lambda: slack.refusals("fatal_error"), 10, "the fatal_error")
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 10, "delivery")
    time.sleep(0.5)
    assert len(slack.calls_of("chat.postMessage")) == 1, "posted twice"
    assert slack.calls_of("conversations.history"), "did not look before sending again"


def test_a_flood_for_one_channel_collapses_into_digests_and_every_alert_appears(make_relay, slack):
    slack.pace_s = 0.25  # Slack's per-channel pace, scaled down
    relay = make_relay(channel_interval_s=0.25)
    for number in range(400):
        assert relay.post_alerts(notification(f"Flood{number}")).status_code == 200
    newest = relay.post_alerts(notification("Flood399", status="resolved"))
    assert newest.status_code == 200
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 60, "the backlog")
    shown = " ".join(json.dumps(post.get("blocks")) + post.get("text", "") for post in slack.posts())
    missing = [n for n in range(400) if not re.search(rf"\bFlood{n}\b", shown)]
    assert not missing, f"alerts in no message: {missing[:10]}"
    assert len(slack.calls_of("chat.postMessage")) < 100  # one per notification would be 401
    assert re.search(r"Flood399\* resolved|\[RESOLVED\] Flood399", shown), "the newest state is not shown"
    assert relay.metric("alert_relay_dead_letters") == 0
    assert relay.metric("alert_relay_delivered_total", 'kind="alert"') == 401


def test_a_message_that_cannot_be_rendered_is_a_dead_letter_at_once_with_its_reason(relay, slack):
    db = sqlite3.connect(relay.config["queue_path"], isolation_level=None)
    db.execute("INSERT INTO messages (kind, channel, payload, created) VALUES ('alert', '#homelab-alerts', ?, ?)",
               (json.dumps({"thread_key": "k", "status": "firing"}), time.time()))
    db.close()
    relay.post_alerts(notification("Behind"))
    wait_for(lambda: relay.metric("alert_relay_dead_letters") == 1, 35, "the dead letter")
    dead = [e for e in relay.events() if e["event"] == "dead letter"][0]
    assert dead["attempts"] == 1 and "unrenderable" in dead["error"]
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the message behind it")


# Faxes


def test_a_fax_is_downloaded_by_its_documented_fax_id_and_the_log_says_so(relay, slack, faxplus):
    faxplus.add_pdf("doc1")
    relay.post_fax(fax_webhook("doc1"))
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload")
    assert [r["path"] for r in faxplus.requests] == ["/v3/accounts/self/files/doc1"]
    assert [e["by"] for e in relay.events() if e["event"] == "fax downloaded"] == ["fax_id"]


def test_the_download_falls_back_once_to_data_file_and_logs_which_worked(make_relay, slack, faxplus):
    faxplus.file_key = "file"
    relay = make_relay(faxplus_base_url=faxplus.base_url.removesuffix("/v3"))  # either spelling of the base
    faxplus.add_pdf("fb1")
    relay.post_fax(fax_webhook("fb1"))
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload")
    assert [r["path"] for r in faxplus.requests] == ["/v3/accounts/self/files/fb1", "/v3/accounts/self/files/fb1-file"]
    assert [e["by"] for e in relay.events() if e["event"] == "fax downloaded"] == ["file"]


def test_a_faxplus_error_leaves_the_fax_queued_then_it_is_delivered(relay, slack, faxplus):
    faxplus.add_pdf("err1")
    faxplus.fail_with = 500
    relay.post_fax(fax_webhook("err1"))
    wait_for(lambda: len(faxplus.requests) >= 3, 10, "retries")
    assert not slack.calls_of("files.completeUploadExternal") and relay.metric("alert_relay_queue_depth") == 1
    faxplus.fail_with = None
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload")
    assert relay.metric("alert_relay_dead_letters") == 0


def test_a_refused_faxplus_token_pauses_faxes_only(make_relay, slack, faxplus):
    relay = make_relay(max_attempts=2, retry_initial_s=0.1, retry_max_s=0.5)
    faxplus.add_pdf("tok1")
    faxplus.token = "rotated-at-fax-plus"
    relay.post_fax(fax_webhook("tok1"))
    wait_for(lambda: len(faxplus.requests) >= 2, 10, "probes")
    relay.post_alerts(notification("StillFlowing"))
    wait_for(lambda: slack.calls_of("chat.postMessage"), 10, "the alert")
    assert relay.metric("alert_relay_delivery_paused", 'service="faxplus"') == 1
    # The fake Slack records the call before the relay has read its reply and dequeued the alert.
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 1, 10, "the delivered alert to leave the queue")
    assert relay.metric("alert_relay_dead_letters") == 0


def test_a_redirect_to_another_origin_gets_no_token_and_the_fax_stays_queued(relay, slack, faxplus):
    elsewhere = FakeFaxPlus("other-token").start()
    try:
        faxplus.add_pdf("redir")
        faxplus.redirect_to = elsewhere.base_url.removesuffix("/v3")
        relay.post_fax(fax_webhook("redir"))
        wait_for(lambda: len(faxplus.requests) >= 2, 10, "attempts")
        assert elsewhere.requests == []
        assert relay.metric("alert_relay_queue_depth") == 1 and not slack.calls_of("files.completeUploadExternal")
    finally:
        elsewhere.close()


def test_a_second_fax_with_the_same_comment_is_not_taken_for_the_first(relay, slack, faxplus):
    faxplus.add_pdf("first")
    relay.post_fax(fax_webhook("first", hook_id="h1"))
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the first fax")
    time.sleep(0.5)  # its share shows in history
    faxplus.add_pdf("second")
    slack.hang_next("files.completeUploadExternal", 30, take_effect=False)
    relay.post_fax(fax_webhook("second", hook_id="h2"))  # same sender, pages and start time
    wait_for(lambda: slack.refused, 10, "the cut-off share")
    relay.kill()
    relay.start()
    uploads = wait_for(lambda: slack.calls_of("files.completeUploadExternal")[1:], 30, "the second fax")
    assert b"second" in uploads[0].params["content"][0]
    # The fake records the call before the relay has its reply and drops the row, so wait for that too.
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 10, "the second fax leaving the queue")


def test_a_cut_off_share_not_yet_in_history_is_waited_for_not_resent(relay, slack, faxplus):
    slack.share_delay_s = 4  # Slack shows the share in history this much later
    kill_while_sharing(relay, slack, faxplus, "slow")
    wait_for(lambda: relay.metric("alert_relay_queue_depth") == 0, 20, "the fax to count as delivered")
    assert len(slack.calls_of("files.completeUploadExternal")) == 1, "shared twice"


# --check-slack and --check-faxplus


def check(relay: Relay, flag: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RELAY), "--config", str(relay.config_path), flag], capture_output=True, text=True, timeout=60)


def test_check_slack_passes_for_a_working_setup(tmp_path, slack, faxplus):
    result = check(Relay(tmp_path / "r", slack, faxplus), "--check-slack")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_check_slack_names_each_problem_on_its_own_line(tmp_path, slack, faxplus):
    slack.set_token(SLACK_TOKEN, scopes={"chat:write", "channels:read", "channels:history"})
    slack.channel("#homelab-critical").member = False
    slack.channel("#toy-redis").archived = True
    routes = {"slack": {"default_channel": "#homelab-alerts",
                        "alerts": [{"match": {"severity": "critical"}, "channel": "#homelab-critical"},
                                   {"match": {"alertname": "ToyRedis.*"}, "channel": "#toy-redis"},
                                   {"match": {"team": "x"}, "channel": "#no-such-channel"}],
                        "faxes": [{"from": "+1 555 010 0142", "channel": CHANNELS["#vendor-faxes"]}]}}
    result = check(Relay(tmp_path / "r", slack, faxplus, routes), "--check-slack")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1
    assert "slack: missing scope files:write (to upload faxes)" in lines
    assert any(line.startswith("slack: missing scope groups:read") for line in lines)
    assert any(line.startswith("slack: bot not in channel #homelab-critical") for line in lines)
    assert "slack: channel #toy-redis (alerts) is archived" in lines
    assert any(line.startswith("slack: channel #no-such-channel (alerts) not found") for line in lines)
    assert len(lines) == 5, lines


def test_check_slack_with_a_revoked_token_says_so_in_one_line(tmp_path, slack, faxplus):
    slack.revoke(SLACK_TOKEN)
    result = check(Relay(tmp_path / "r", slack, faxplus), "--check-slack")
    assert result.returncode == 1
    assert result.stdout.strip() == "slack: auth.test refused the token in slack_token_file: token_revoked"


def test_check_faxplus_asks_the_account_and_files_endpoints(tmp_path, slack, faxplus):
    relay = Relay(tmp_path / "r", slack, faxplus)
    assert check(relay, "--check-faxplus").stdout.strip() == "ok"
    assert [r["path"] for r in faxplus.requests][0] == "/v3/accounts/self"
    faxplus.scopes = {"fax:user:read"}
    result = check(relay, "--check-faxplus")
    assert result.returncode == 1
    assert result.stdout.strip() == "faxplus: files endpoint (fax:fax:read): HTTP 403, the token lacks the scope"
    faxplus.token = "other"
    assert check(relay, "--check-faxplus").stdout.strip().splitlines()[0] == (
        "faxplus: account endpoint (fax:user:read): HTTP 401, the token in faxplus_token_file is refused")
