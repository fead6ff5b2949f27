"""Rendering that no alert or fax can subvert: hostile strings everywhere, and no message contains a
mention or a link the relay did not build, or breaks one of Slack's limits."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from alert_relay import render
from tests.alert_relay.fakes import SlackLimits

# Pieces that become markup if passed through: mentions, links, entities, code spans, quotes.
HOSTILE_PIECES = ["<!channel>", "<!here>", "<!everyone>", "@channel", "@here", "@everyone", "<@U0123ABCD>",
                  "<#C0123ABCD>", "<http://evil.example|click>", "<mailto:x@y|m>", "|", ">", "<", "&", "&lt;",
                  "`", "```", "*", "_", "~", "\n", "\r\n", "> quote", "http://evil.example/x", "javascript:alert(1)",
                  "\ud800", "\U0001F600", "<!date^1^{date}|x>", "<!subteam^S1>", ";", "%7C", " ", "é"]
hostile = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=20)), max_size=12).map("".join)
long_hostile = st.one_of(hostile, st.builds(lambda piece, n: piece * n, st.sampled_from(HOSTILE_PIECES), st.integers(1, 1500)))
url = st.one_of(hostile, st.builds(lambda tail: "http://prometheus.example:9090/graph?g0.expr=" + tail, hostile),
                st.builds(lambda tail: "https://runbooks.example/" + tail, hostile))

# Shrinking examples this large takes minutes; an unshrunk failing example is still printed.
FAST = {"deadline": None, "phases": [Phase.explicit, Phase.reuse, Phase.generate],
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

OUR_LABELS = {"Runbook", "Graph", ":book: Runbook", ":chart_with_upwards_trend: Graph", ":no_bell: Silence"}
DATE = re.compile(r"^!date\^-?\d+\^\{date_short_pretty\} \{time\}\|[^<>|]*$")
LINK = re.compile(r"^(https?://[^\s|<>]+)\|(.*)$")
MENTION = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def assert_safe(text: str, blocks: list | None = None) -> None:
    shown = [text, *strings(blocks or [])]
    for piece in shown:
        for token in re.findall(r"<([^>]*)>", piece):
            if DATE.match(token):
                continue
            found = LINK.match(token)
            assert found and found.group(2) in OUR_LABELS, f"markup the relay did not build: <{token}>"
        assert "<" not in re.sub(r"<[^<>]*>", "", piece), f"stray < in {piece!r}"
        assert not MENTION.search(piece), piece
        assert not re.search(r"&(?!amp;|lt;|gt;)", piece), f"unescaped & in {piece!r}"
        piece.encode("utf-8")  # raises on a lone surrogate
    json.dumps(blocks).encode("utf-8")


def assert_within_limits(text: str, blocks: list) -> None:
    """The same rules the strict fake Slack enforces (and cites)."""
    assert SlackLimits.check_message(text, blocks) is None, SlackLimits.check_message(text, blocks)
    for block in blocks:
        if block["type"] == "section":
            for line in block["text"]["text"].split("\n"):
                assert line.count("`") % 2 == 0, f"broken code span: {line!r}"
            assert block["text"]["verbatim"] is True


def hostile_notification(draw, count: int) -> dict:
    alerts = []
    for _ in range(count):
        labels = {draw(long_hostile): draw(long_hostile) for _ in range(draw(st.integers(0, 4)))}
        labels["alertname"] = draw(long_hostile)
        alerts.append({
            "status": draw(st.sampled_from(["firing", "resolved"])),
            "labels": labels,
            "annotations": {"summary": draw(long_hostile), "description": draw(long_hostile), "runbook_url": draw(url)},
            "startsAt": draw(st.one_of(hostile, st.just("2024-05-01T10:00:00Z"))),
            "endsAt": draw(st.one_of(hostile, st.just("2024-05-01T10:30:00Z"))),
            "generatorURL": draw(url),
            "fingerprint": "f",
        })
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {"thread_key": "k", "status": draw(st.sampled_from(["firing", "resolved"])), "alerts": alerts,
            "common_labels": common,
            "common_annotations": {"summary": draw(long_hostile), "description": draw(long_hostile),
                                   "runbook_url": draw(url)},
            "external_url": draw(url)}


@settings(max_examples=150, **FAST)
@given(st.data())
def test_no_hostile_alert_text_becomes_a_mention_a_link_or_an_oversized_message(data):
    payload = hostile_notification(data.draw, data.draw(st.integers(1, 3)))
    text, blocks = render.render_alert(payload, data.draw(st.one_of(st.none(), url)))
    assert_safe(text, blocks)
    assert_within_limits(text, blocks)
    assert_safe(render.render_thread_reply(payload))


@settings(max_examples=50, **FAST)
@given(st.data())
def test_digests_of_hostile_notifications_are_safe_and_within_limits(data):
    payloads = [hostile_notification(data.draw, 1) for _ in range(data.draw(st.integers(1, 30)))]
    text, blocks, used = render.render_digest(payloads, len(payloads) + 5)
    assert 1 <= used <= len(payloads)
    assert_safe(text, blocks)
    assert_within_limits(text, blocks)


@settings(max_examples=100, **FAST)
@given(sender=long_hostile, to=long_hostile, start=long_hostile, fax_id=long_hostile)
def test_fax_comment_title_and_file_name_are_literal(sender, to, start, fax_id):
    payload = {"sender": sender, "to": to, "start_time": start, "pages": 2, "fax_id": fax_id}
    assert_safe(render.fax_comment(payload))
    assert_safe(render.fax_title(payload))
    assert re.fullmatch(r"fax-[A-Za-z0-9_-]*\.pdf", render.fax_file_name(payload))


@pytest.mark.parametrize("word", ["@channel", "@HERE", "@everyone"])
def test_a_clip_right_after_a_mention_word_does_not_make_a_mention(word):
    """A longer word ("@channelCrew") is no mention, but clipped to its field it becomes one; found
    by the digest test above (a label value clipped to the digest's code span)."""
    limit = 80
    value = "x" * (limit - 1 - len(word)) + word + "Crew"
    shown = render.esc(value, limit)
    assert shown.endswith(render.ELLIPSIS)
    assert_safe(shown)
    assert_safe(render.code(value, limit))


def test_a_group_of_500_alerts_fits_and_says_how_many_more():
    alerts = [{"status": "firing", "labels": {"alertname": "DiskFull", "instance": f"node-{n}:9100", "mount": "/" * 50},
               "annotations": {"summary": f"Disk full on node-{n}", "description": "d" * 900},
               "startsAt": "2024-05-01T10:00:00Z", "generatorURL": f"http://prometheus.example/graph?n={n}"}
              for n in range(500)]
    payload = {"status": "firing", "alerts": alerts, "common_labels": {"alertname": "DiskFull"},
               "common_annotations": {}, "external_url": "http://alertmanager.example:9093"}
    text, blocks = render.render_alert(payload, None)
    assert_within_limits(text, blocks)
    more = [b for b in blocks if b["type"] == "context" and "more alert" in b["elements"][0]["text"]]
    shown = sum(1 for b in blocks if b["type"] == "section" and "firing* since" in b["text"]["text"])
    assert more and f"and {500 - shown} more alerts (500 firing)".replace("(500", f"({500 - shown}") in more[0]["elements"][0]["text"]


def test_examples_from_the_issue_show_as_typed():
    alert = {"status": "firing", "labels": {"alertname": "<!channel>", "a`b": "x`y"},
             "annotations": {"summary": "<http://evil|click> @here"}, "startsAt": "2024-05-01T10:00:00Z",
             "generatorURL": "http://x/>|<!channel>", "fingerprint": "f"}
    payload = {"status": "firing", "alerts": [alert], "common_labels": {"alertname": "<!channel>"},
               "common_annotations": {"summary": "<http://evil|click> @here", "runbook_url": "javascript:alert(1)"},
               "external_url": "http://am"}
    text, blocks = render.render_alert(payload, None)
    assert text.startswith("[FIRING:1] &lt;!channel&gt;: &lt;http://evil|click&gt; @\u2060here")
    rendered = json.dumps(blocks)
    assert "Runbook: `javascript:alert(1)`" in rendered  # text, not a link
    assert "<http://x/%3E%7C%3C!channel%3E|" in rendered
    assert "`a\\u02cbb=x\\u02cby`" in rendered  # json.dumps escapes non-ASCII


def test_a_payload_that_cannot_be_rendered_says_why():
    with pytest.raises(render.Unrenderable, match="KeyError"):
        render.render_alert({"status": "firing", "alerts": []}, None)


def test_a_digest_stops_before_a_payload_it_cannot_render_so_only_that_one_is_refused():
    good = {"status": "firing", "common_labels": {"alertname": "A"},
            "alerts": [{"status": "firing", "labels": {"alertname": "A", "instance": "n1"}}]}
    _, _, used = render.render_digest([good, good, {"status": "firing"}, good], 4)
    assert used == 2
    with pytest.raises(render.Unrenderable):
        render.render_digest([{"status": "firing"}, good], 2)
