"""Slack message content for queued alerts and faxes: Block Kit blocks, fallback text, fax comments.

Pure functions of a queued payload; slack.py sends what they return.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

MAX_ALERTS_SHOWN = 10  # Slack allows 50 blocks per message; a summary line covers the rest
SECTION_LIMIT = 2900   # Slack's section text limit is 3000 characters


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    """Label and annotation text as mrkdwn shows it literally ("value < 10" is not a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _when(timestamp: str) -> str:
    """An Alertmanager RFC 3339 time as a Slack date, shown in each reader's own time zone."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return _esc(timestamp)
    fallback = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def silence_url(base: str, labels: dict[str, str]) -> str:
    quoted = {name: value.replace("\\", "\\\\").replace('"', '\\"') for name, value in labels.items()}
    matchers = ",".join(f'{name}="{value}"' for name, value in sorted(quoted.items()))
    return f"{base.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"


def render_alert(payload: dict[str, Any], alertmanager_url: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for one Alertmanager notification (this channel's alerts)."""
    alerts = payload["alerts"]
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    resolved = payload["status"] == "resolved"
    common = payload["common_labels"]
    annotations = payload["common_annotations"]
    name = common.get("alertname") or alerts[0]["labels"].get("alertname", "alert")
    severity = common.get("severity", "")
    state = "RESOLVED" if resolved else f"FIRING:{len(firing)}"
    icon = ":large_green_circle:" if resolved else (":red_circle:" if severity == "critical" else ":large_orange_circle:")
    summary = annotations.get("summary") or alerts[0]["annotations"].get("summary", "")
    title = f"[{state}] {name}" + (f" ({severity})" if severity else "")
    text = f"{title}: {summary}" if summary else title

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"{title}", 150), "emoji": True}},
    ]
    head = [f"{icon} *{state.split(':')[0].capitalize()}*" + (f" · severity *{_esc(severity)}*" if severity else "")]
    if summary:
        head.append(f"*{_esc(summary)}*")
    if annotations.get("description"):
        head.append(_esc(annotations["description"]))
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(head))}})

    for alert in alerts[:MAX_ALERTS_SHOWN]:
        own = {k: v for k, v in alert["labels"].items() if common.get(k) != v}
        if alert["status"] == "resolved":
            lines = [f"*resolved* {_when(alert['endsAt'])}, fired {_when(alert['startsAt'])}"]
        else:
            lines = [f"*firing* since {_when(alert['startsAt'])}"]
        for key in ("summary", "description"):
            value = alert["annotations"].get(key)
            if value and value != annotations.get(key):
                lines.append(_esc(value))
        if own:
            lines.append(" ".join(f"`{k}={_esc(v)}`" for k, v in sorted(own.items())))
        links = []
        if alert["annotations"].get("runbook_url") and alert["annotations"]["runbook_url"] != annotations.get("runbook_url"):
            links.append(f"<{alert['annotations']['runbook_url']}|Runbook>")
        if alert.get("generatorURL"):
            links.append(f"<{alert['generatorURL']}|Graph>")
        if links:
            lines.append(" · ".join(links))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}})
    if len(alerts) > MAX_ALERTS_SHOWN:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"and {len(alerts) - MAX_ALERTS_SHOWN} more alerts"}]})

    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _clip(" ".join(f"`{k}={_esc(v)}`" for k, v in sorted(common.items())) or "no common labels")}]})
    links = []
    if annotations.get("runbook_url"):
        links.append(f"<{annotations['runbook_url']}|:book: Runbook>")
    if len({alert.get("generatorURL") for alert in alerts}) == 1 and alerts[0].get("generatorURL"):
        links.append(f"<{alerts[0]['generatorURL']}|:chart_with_upwards_trend: Graph>")
    base = alertmanager_url or payload.get("external_url")
    if base and not resolved:
        links.append(f"<{silence_url(base, common)}|:no_bell: Silence>")
    if links:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "  ·  ".join(links)}})
    return text, blocks


def render_thread_reply(payload: dict[str, Any]) -> str:
    alerts = payload["alerts"]
    if payload["status"] == "resolved":
        ended = max((alert.get("endsAt") or "" for alert in alerts), default="")
        return ":white_check_mark: Resolved" + (f" {_when(ended)}" if ended else "")
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    return f":rotating_light: Now {len(firing)} firing, {len(alerts) - len(firing)} resolved"


def fax_comment(payload: dict[str, Any]) -> str:
    pages = payload.get("pages")
    when = payload.get("start_time") or ""
    parts = [f":fax: Fax from {_esc(payload['sender'])}"]
    if pages is not None:
        parts.append(f"{pages} page{'s' if pages != 1 else ''}")
    if when:
        parts.append(f"received {_esc(when)}")
    return ", ".join(parts) + (f" (to {_esc(payload['to'])})" if payload.get("to") else "")
