#!/usr/bin/env python3
"""alert-relay under a flood: --alerts notifications for one channel, Slack paced at ~1 message/s.

A fresh relay (channel_interval_s 1.0) between the strict fake Slack, which answers 429 to a second
post to a channel within --pace seconds, and the fake FAX.PLUS. The flood is posted by 8 clients;
the last notification resolves a group fired earlier, so "the newest state" is a distinct line.
Prints, from the same run:

- reference: time from posting one alert to an idle relay until Slack shows it;
- flood: time from the last accepted notification until Slack shows the newest state, with the
  ratio to the reference and to what one message per notification would take (queued x pace);
- messages Slack received, alerts in no message (lost), dead letters, 429s drawn.

Run from the repo root: .venv/bin/python bench/relay_flood.py [--alerts 20000] [--pace 1.0]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.alert_relay.conftest import AM_TOKEN, CHANNELS, FAXPLUS_TOKEN, SLACK_TOKEN, Relay, notification  # noqa: E402
from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack  # noqa: E402


def shown(slack: FakeSlack) -> str:
    return "\n".join(json.dumps(post.get("blocks")) + post.get("text", "") for post in slack.posts())


def wait_until(condition, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.05)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--pace", type=float, default=1.0, help="Slack's per-channel pace, seconds")
    args = parser.parse_args()

    slack = FakeSlack(SLACK_TOKEN, CHANNELS, pace_s=args.pace).start()
    faxplus = FakeFaxPlus(FAXPLUS_TOKEN).start()
    with tempfile.TemporaryDirectory(prefix="relay-flood-") as workdir:
        relay = Relay(Path(workdir), slack, faxplus, channel_interval_s=args.pace, max_attempts=12,
                      retry_initial_s=1.0, retry_max_s=30.0, max_body_bytes=1 << 20).start()
        try:
            # Reference: one alert into the idle relay.
            start = time.monotonic()
            assert relay.post_alerts(notification("Reference")).status_code == 200
            reference = wait_until(lambda: "Reference" in shown(slack), 30) - start
            time.sleep(args.pace)

            session = requests.Session
            local = {}

            def post(number: int) -> None:
                http = local.setdefault(number % 8, session())
                answer = http.post(f"{relay.url}/alertmanager", json=notification(f"Flood{number}"), timeout=30,
                                   headers={"Authorization": f"Bearer {AM_TOKEN}"})
                assert answer.status_code == 200, answer.text

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                for chunk in range(0, args.alerts - 1, 800):
                    list(pool.map(post, range(chunk, min(chunk + 800, args.alerts - 1))))
            newest = notification(f"Flood{args.alerts // 2}", status="resolved")
            assert relay.post_alerts(newest).status_code == 200
            posted = time.monotonic()
            queued = relay.metric("alert_relay_queue_depth")
            pattern = re.compile(rf"Flood{args.alerts // 2}\* resolved|\[RESOLVED\] Flood{args.alerts // 2}\b")
            seen_at = wait_until(lambda: pattern.search(shown(slack)), 1800)
            wait_until(lambda: relay.metric("alert_relay_queue_depth") == 0, 600)
            text = shown(slack)
            lost = [n for n in range(args.alerts - 1) if not re.search(rf"\bFlood{n}\b", text)]
            dead = relay.metric("alert_relay_dead_letters")
        finally:
            relay.stop()
            slack.close()
            faxplus.close()

    messages = len(slack.calls_of("chat.postMessage")) - 1  # less the reference
    throttled = sum(1 for call in slack.refused if call.params.get("status") == 429)
    flood = (seen_at - posted) if seen_at else float("inf")
    naive = queued * args.pace
    print(f"reference: one alert on an idle relay shown after {reference:.2f} s")
    print(f"flood: {args.alerts} notifications for one channel posted in {posted - started:.1f} s, "
          f"{queued:.0f} still queued when the last was accepted")
    print(f"newest state shown {flood:.1f} s after the last notification was accepted "
          f"({flood / reference:.0f}x the reference; one message each would take ~{naive:.0f} s)")
    print(f"messages sent: {messages} for {args.alerts} notifications; alerts in no message: {len(lost)}; "
          f"dead letters: {dead:.0f}; 429s drawn: {throttled}")
    target = "met" if flood <= 120 and not lost and not dead else "NOT met"
    print(f"target (newest state within 120 s, none lost, none dead): {target}")


if __name__ == "__main__":
    main()
