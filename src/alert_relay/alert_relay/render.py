"""Slack message content for queued alerts and faxes: Block Kit blocks, fallback text, fax comments.

Pure functions of a queued payload; slack.py sends what they return. Everything an alert or a fax
carries is data, never markup:

- every such string is escaped for mrkdwn (&, <, > as Slack's "Escaping text" guide says), so
  `<!channel>`, `<@U…>` or `<http://x|y>` in a label show as typed; plain `@channel`/`@here`/
  `@everyone` get a word joiner; mrkdwn text objects are `verbatim` (no auto-linking of bare URLs,
  #channels or @names) and the fallback text is sent with parse=none (slack.py);
- links are built only here, from http(s) URLs with every character that could end the link target
  percent-encoded; any other URL is shown as text;
- every field is clipped to Slack's documented limits with a visible "…", and a message's blocks
  stay within the total Slack accepts (bolt-js #2509/#2867: about 12,000 characters of block text,
  `msg_blocks_too_long`): what does not fit is counted in an "and N more" line.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

# Slack's documented limits (docs.slack.dev/reference/block-kit/blocks/*, chat.postMessage).
BLOCKS_LIMIT = 50           # blocks per message
SECTION_TEXT_LIMIT = 3000   # section block text
HEADER_TEXT_LIMIT = 150     # header block plain_text
CONTEXT_ELEMENTS_LIMIT = 10
# Total block text Slack accepts is undocumented: ~12,000 (bolt-js #2509, #2867), counted with
# some overhead per block. We stay well below it, charging each block an allowance.
BLOCKS_TEXT_BUDGET = 10_000
BLOCK_OVERHEAD = 50
FALLBACK_TEXT_LIMIT = 1000  # notification text; Slack truncates at 40,000, readers at far less
FIELD_LIMIT = 1000          # one label value, summary, description before it is clipped
LINK_TARGET_LIMIT = 2000    # longer URLs are shown as text

ELLIPSIS = "…"
# Whatever follows: a clip may end the word right after "channel" ("@channelX" -> "@channel…").
_MENTION_WORDS = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
_WORD_JOINER = "\u2060"
_SURROGATES = re.compile("[\ud800-\udfff]")
_UNLINKABLE = re.compile(r"[\x00-\x20\x7f-\x9f\ud800-\udfff]")
_LINK_SAFE = ":/?#[]!$&'()*+,;=%~-._"  # RFC 3986 reserved and unreserved, minus what ends a link, and @


class Unrenderable(ValueError):
    """The queued payload cannot become a Slack message (missing or mistyped fields)."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def esc(value: Any, limit: int = FIELD_LIMIT) -> str:
    """Any value from an alert or fax as mrkdwn that shows it literally, at most ``limit``
    characters; a cut never splits an entity."""
    text = _SURROGATES.sub("\ufffd", str(value))  # lone surrogates cannot be sent as UTF-8
    text = text.replace("`", "\u02cb")  # a backtick would open or close a code span
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MENTION_WORDS.sub(lambda m: "@" + _WORD_JOINER + m.group(1), text)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if cut.rfind("&") > cut.rfind(";"):
        cut = cut[: cut.rfind("&")]
    return cut + ELLIPSIS


def joined(items: list[str], separator: str, limit: int) -> str:
    """Whole ``items`` joined while they fit in ``limit``; the rest counted."""
    kept: list[str] = []
    size = 0
    for number, item in enumerate(items):
        if size + len(item) + len(separator) > limit - 20:
            kept.append(f"{ELLIPSIS} {len(items) - number} more")
            break
        kept.append(item)
        size += len(item) + len(separator)
    return separator.join(kept)


def code(value: Any, limit: int = FIELD_LIMIT) -> str:
    """A value inside `…`: a backtick or line break in it would end the code span."""
    one_line = re.sub(r"[\r\n]+", " ", str(value))
    return f"`{esc(one_line, limit)}`"


def link(url: Any, label: str) -> str:
    """``<url|label>`` for an http(s) URL, else the URL as escaped text. ``label`` is our own."""
    url = str(url)
    try:
        # urlsplit forgives leading spaces and control characters; a link target must not have any.
        linkable = (urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).netloc)
                    and not _UNLINKABLE.search(url) and len(url) <= LINK_TARGET_LIMIT)
    except ValueError:
        linkable = False
    if not linkable:
        return f"{label}: {code(url, 200)}"
    target = quote(url, safe=_LINK_SAFE).replace("&", "&amp;")
    return f"<{target}|{label}>"


def mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack would otherwise turn bare URLs, #names and @names into links and mentions.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(lines: list[str]) -> dict[str, Any]:
    """A section of whole lines (each already within its own limit); what does not fit in Slack's
    3000 characters is counted."""
    return {"type": "section", "text": mrkdwn(joined(lines, "\n", SECTION_TEXT_LIMIT))}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text)]}


def block_text_size(blocks: list[dict[str, Any]]) -> int:
    """What Slack counts against its total: the text in every block, plus our per-block allowance."""
    def texts(node: Any) -> int:
        if isinstance(node, dict):
            return sum(len(v) if k == "text" and isinstance(v, str) else texts(v) for k, v in node.items())
        if isinstance(node, list):
            return sum(texts(item) for item in node)
        return 0
    return texts(blocks) + BLOCK_OVERHEAD * len(blocks)


def when(timestamp: Any) -> str:
    """An Alertmanager RFC 3339 time as a Slack date, shown in each reader's own time zone."""
    try:
        moment = datetime.fromisoformat(str(timestamp))
        epoch = int(moment.timestamp())
    except (ValueError, OverflowError, OSError):
        return esc(timestamp, 64)
    fallback = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{fallback}>"


def silence_url(base: str, labels: dict[str, str]) -> str:
    labels = {_SURROGATES.sub("\ufffd", name): _SURROGATES.sub("\ufffd", value) for name, value in labels.items()}
    quoted = {name: value.replace("\\", "\\\\").replace('"', '\\"') for name, value in labels.items()}
    matchers = ",".join(f'{name}="{value}"' for name, value in sorted(quoted.items()))
    return f"{base.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"


def _alert_lines(alert: dict[str, Any], common: dict[str, str], annotations: dict[str, str]) -> list[str]:
    own = {k: v for k, v in alert["labels"].items() if common.get(k) != v}
    if alert["status"] == "resolved":
        lines = [f"*resolved* {when(alert.get('endsAt', ''))}, fired {when(alert['startsAt'])}"]
    else:
        lines = [f"*firing* since {when(alert['startsAt'])}"]
    for key in ("summary", "description"):
        value = alert.get("annotations", {}).get(key)
        if value and value != annotations.get(key):
            lines.append(esc(value))
    if own:
        lines.append(joined([code(f"{k}={v}", 300) for k, v in sorted(own.items())], " ", 1500))
    links = []
    runbook = alert.get("annotations", {}).get("runbook_url")
    if runbook and runbook != annotations.get("runbook_url"):
        links.append(link(runbook, "Runbook"))
    if alert.get("generatorURL"):
        links.append(link(alert["generatorURL"], "Graph"))
    if links:
        lines.append(" · ".join(links))
    return lines


def render_alert(payload: dict[str, Any], alertmanager_url: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for one Alertmanager notification (this channel's alerts)."""
    try:
        return _render_alert(payload, alertmanager_url)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise Unrenderable(f"alert payload lacks {exc.__class__.__name__}: {str(exc)[:80]}") from None


def _render_alert(payload: dict[str, Any], alertmanager_url: str | None) -> tuple[str, list[dict[str, Any]]]:
    alerts = payload["alerts"]
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    resolved = payload["status"] == "resolved"
    common = payload["common_labels"]
    annotations = payload["common_annotations"]
    name = common.get("alertname") or alerts[0]["labels"].get("alertname", "alert")
    severity = common.get("severity", "")
    state = "RESOLVED" if resolved else f"FIRING:{len(firing)}"
    icon = ":large_green_circle:" if resolved else (":red_circle:" if severity == "critical" else ":large_orange_circle:")
    summary = annotations.get("summary") or alerts[0].get("annotations", {}).get("summary", "")
    title = f"[{state}] {esc(name, 100)}" + (f" ({esc(severity, 30)})" if severity else "")
    text = f"{title}: {esc(summary, FALLBACK_TEXT_LIMIT - len(title) - 2)}" if summary else title

    head = [f"{icon} *{state.split(':')[0].capitalize()}*" + (f" · severity *{esc(severity, 30)}*" if severity else "")]
    if summary:
        head.append(f"*{esc(summary)}*")
    if annotations.get("description"):
        head.append(esc(annotations["description"]))
    top = [{"type": "header", "text": {"type": "plain_text", "text": clip(title, HEADER_TEXT_LIMIT), "emoji": True}},
           section(head)]

    bottom = [context(joined([code(f"{k}={v}", 300) for k, v in sorted(common.items())], " ", 2000)
                      or "no common labels")]
    links = []
    if annotations.get("runbook_url"):
        links.append(link(annotations["runbook_url"], ":book: Runbook"))
    if len({alert.get("generatorURL") for alert in alerts}) == 1 and alerts[0].get("generatorURL"):
        links.append(link(alerts[0]["generatorURL"], ":chart_with_upwards_trend: Graph"))
    base = alertmanager_url or payload.get("external_url")
    if base and not resolved:
        links.append(link(silence_url(base, common), ":no_bell: Silence"))
    if links:
        bottom.append(section(["  ·  ".join(links)]))

    # As many alerts as fit in what Slack accepts (blocks and total text); the rest are counted.
    reserve = 1  # the "and N more" line
    budget = BLOCKS_TEXT_BUDGET - block_text_size(top + bottom) - BLOCK_OVERHEAD - 100
    middle: list[dict[str, Any]] = []
    for number, alert in enumerate(alerts):
        block = section(_alert_lines(alert, common, annotations))
        size = block_text_size([block])
        if len(top) + len(middle) + len(bottom) + reserve + 1 > BLOCKS_LIMIT or size > budget:
            rest = len(alerts) - number
            middle.append(context(f"and {rest} more alert{'s' if rest != 1 else ''} "
                                  f"({len([a for a in alerts[number:] if a['status'] == 'firing'])} firing)"))
            break
        middle.append(block)
        budget -= size
    return text, top + middle + bottom


def render_thread_reply(payload: dict[str, Any]) -> str:
    alerts = payload["alerts"]
    if payload["status"] == "resolved":
        ended = max((str(alert.get("endsAt") or "") for alert in alerts), default="")
        return ":white_check_mark: Resolved" + (f" {when(ended)}" if ended else "")
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    return f":rotating_light: Now {len(firing)} firing, {len(alerts) - len(firing)} resolved"


def digest_line(payload: dict[str, Any]) -> str:
    """One queued notification as one short line of a digest: name, state, each alert's own labels."""
    alerts = payload["alerts"]
    common = payload["common_labels"]
    name = common.get("alertname") or alerts[0]["labels"].get("alertname", "alert")
    firing = sum(1 for alert in alerts if alert["status"] == "firing")
    state = "resolved" if payload["status"] == "resolved" else f"firing:{firing}"
    identities = []
    for alert in alerts:
        own = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")}
        identities.append(",".join(f"{k}={v}" for k, v in sorted(own.items())))
    return f"*{esc(name, 80)}* {state} {code(' '.join(identities), 400)}"


def render_digest(payloads: list[dict[str, Any]], total_queued: int) -> tuple[str, list[dict[str, Any]], int]:
    """(fallback text, blocks, how many of ``payloads`` it covers): queued notifications of one
    channel collapsed into one message, oldest first, as many whole ones as fit (at least one).
    A payload that cannot be rendered ends the digest before it (or, first, raises Unrenderable)."""
    budget = BLOCKS_TEXT_BUDGET - 400  # header, context and the per-block allowance of both
    sections: list[list[str]] = [[]]
    section_size = size = used = 0
    for payload in payloads:
        try:
            line = digest_line(payload)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            if used:
                break
            raise Unrenderable(f"alert payload lacks {exc.__class__.__name__}: {str(exc)[:80]}") from None
        if section_size + len(line) + 1 > SECTION_TEXT_LIMIT - 40:
            if len(sections) + 3 > BLOCKS_LIMIT:
                break
            sections.append([])
            section_size = 0
            size += BLOCK_OVERHEAD
        if used and size + len(line) + 1 > budget:
            break
        sections[-1].append(line)
        section_size += len(line) + 1
        size += len(line) + 1
        used += 1
    behind = total_queued - used
    title = f"{used} queued notification{'s' if used != 1 else ''} in one message"
    text = f"{title} (Slack allows about one message per second per channel)"
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}}]
    blocks += [{"type": "section", "text": mrkdwn("\n".join(lines))} for lines in sections if lines]
    blocks.append(context(f"{behind} more queued behind these" if behind > 0 else "newest state: nothing queued behind"))
    return text, blocks, used


def fax_comment(payload: dict[str, Any]) -> str:
    pages = payload.get("pages")
    moment = payload.get("start_time") or ""
    parts = [f":fax: Fax from {esc(payload['sender'], 64)}"]
    if isinstance(pages, int):
        parts.append(f"{pages} page{'s' if pages != 1 else ''}")
    if moment:
        parts.append(f"received {esc(moment, 64)}")
    return ", ".join(parts) + (f" (to {esc(payload['to'], 64)})" if payload.get("to") else "")


def fax_title(payload: dict[str, Any]) -> str:
    return f"Fax from {esc(payload['sender'], 64)}"


def fax_file_name(payload: dict[str, Any]) -> str:
    """The uploaded file's name carries the FAX.PLUS fax id: a cut-off share is recognised by it."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(payload["fax_id"]))[:100]
    return f"fax-{safe}.pdf"
