"""Received faxes: a listed sender's PDF reaches its channel with a comment; others are dropped."""

from __future__ import annotations

import time

from tests.alert_relay.conftest import CHANNELS, fax_webhook, wait_for


def test_fax_from_a_listed_sender_arrives_as_a_pdf_with_its_comment(relay, slack, faxplus):
    pdf = faxplus.add_pdf("abc123")
    # FAX.PLUS spells the sender without punctuation; the route lists "+1 (555) 010-0142".
    answer = relay.post_fax(fax_webhook("abc123", sender="+15550100142", pages=3))
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    done = wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload")[0].params
    assert done["channel_id"] == CHANNELS["#vendor-faxes"]
    assert done["content"] == [pdf]
    comment = done["initial_comment"]
    assert "+15550100142" in comment and "3 pages" in comment and "2024-05-01 09:59:12" in comment
    started = slack.calls_of("files.getUploadURLExternal")[0].params
    # The file is named by its FAX.PLUS id: that is how a cut-off share is recognised.
    assert started["filename"] == "fax-abc123.pdf" and int(started["length"]) == len(pdf)
    assert faxplus.requests == [{"path": "/v3/accounts/self/files/abc123", "format": "pdf", "authorization": "yes"}]


def test_fax_from_an_unlisted_sender_is_dropped_with_a_log_line(relay, slack, faxplus):
    faxplus.add_pdf("spam")
    answer = relay.post_fax(fax_webhook("spam", sender="+1 555 010 9999"))
    assert answer.status_code == 200 and answer.json()["status"] == "dropped"
    time.sleep(1)
    assert not slack.calls and not faxplus.requests
    dropped = [event for event in relay.events() if event["event"].startswith("fax dropped")]
    assert dropped and dropped[0]["sender"] == "+15550109999"
    assert relay.metric("alert_relay_queue_depth") == 0


def test_fax_retries_and_from_number_spelling_are_delivered_once(relay, slack, faxplus):
    faxplus.add_pdf("f1")
    payload = fax_webhook("f1")
    payload["data"]["from_number"] = payload["data"].pop("from")
    payload["data"]["to_number"] = payload["data"].pop("to")
    assert [relay.post_fax(payload).json()["status"] for _ in range(2)] == ["queued", "duplicate"]
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload")
    time.sleep(1)
    assert len(slack.calls_of("files.completeUploadExternal")) == 1


def test_fax_not_yet_downloadable_is_retried(relay, slack, faxplus):
    relay.post_fax(fax_webhook("late"))
    wait_for(lambda: len(faxplus.requests) >= 2, 10, "download retries")
    assert not slack.calls_of("files.getUploadURLExternal")
    faxplus.add_pdf("late")
    wait_for(lambda: slack.calls_of("files.completeUploadExternal"), 10, "the upload once the file is there")


def test_fax_webhook_with_missing_fields_is_400(relay):
    bad = fax_webhook("x")
    del bad["data"]["file"]
    answer = relay.post_fax(bad)
    assert answer.status_code == 400 and "data.file" in answer.json()["error"]
    assert relay.post_fax({"hook": {}}).status_code == 400
