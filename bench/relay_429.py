#!/usr/bin/env python3
"""alert-relay's delivery through a Slack 429 storm.

Queues the same burst of alerts (spread over three channels) twice, each time into a fresh relay
paced at Slack's one message per second per channel: once with Slack healthy (the reference) and
once with Slack answering 429 + Retry-After to every call for the first --storm seconds. Prints the
time until the last message arrived, the ratio, how much of the storm-run time the storm itself
explains, how many 429s the relay drew (a polite client draws about storm / Retry-After), and
checks that every message arrived exactly once and that no 429 counted as a failed attempt.

Run from the repo root: .venv/bin/python bench/relay_429.py [--messages 18] [--storm 10] [--retry-after 2]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.alert_relay.conftest import CHANNELS, FAXPLUS_TOKEN, SLACK_TOKEN, Relay, notification  # noqa: E402
from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack  # noqa: E402

# (alertname prefix, severity) routed to three channels by the test routes
KINDS = (("Disk", "warning"), ("Host", "critical"), ("ToyRedis", "warning"))


def run(messages: int, storm: float, retry_after: int) -> dict[str, float]:
    slack = FakeSlack(SLACK_TOKEN, CHANNELS).start()
    faxplus = FakeFaxPlus(FAXPLUS_TOKEN).start()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir:
        relay = Relay(Path(workdir), slack, faxplus, channel_interval_s=1.0, max_attempts=3).start()
        try:
            if storm:
                slack.storm(storm, retry_after=retry_after)
            start = time.monotonic()
            for n in range(messages):
                prefix, severity = KINDS[n % len(KINDS)]
                answer = relay.post_alerts(notification(f"{prefix}Alert{n}", severity=severity))
                assert answer.status_code == 200, answer.text
            deadline = start + storm + messages * 2 + 60
            while len(slack.calls_of("chat.postMessage")) < messages and time.monotonic() < deadline:
                time.sleep(0.02)
            posts = slack.calls_of("chat.postMessage")
            elapsed = (posts[-1].at if posts else time.monotonic()) - start
            time.sleep(1.5)  # let any duplicate arrive before counting
            posts = slack.calls_of("chat.postMessage")
            counts = Counter(int(re.search(r"Alert(\d+)", call.params["text"]).group(1)) for call in posts)
            failures = relay.metric("alert_relay_delivery_failures_total", 'kind="alert"')
            dead = relay.metric("alert_relay_dead_letters")
        finally:
            relay.stop()
            slack.close()
            faxplus.close()
    return {
        "elapsed": elapsed,
        "lost": sum(1 for n in range(messages) if counts[n] == 0),
        "duplicated": sum(count - 1 for count in counts.values() if count > 1),
        "throttled": sum(1 for call in slack.refused if call.params.get("status") == 429),
        "failures": failures,
        "dead": dead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=18)
    parser.add_argument("--storm", type=float, default=10.0)
    parser.add_argument("--retry-after", type=int, default=2)
    args = parser.parse_args()

    reference = run(args.messages, 0, args.retry_after)
    stormy = run(args.messages, args.storm, args.retry_after)

    print(f"{args.messages} alerts over {len(KINDS)} channels, paced 1 message/s/channel; "
          f"storm: 429 + Retry-After {args.retry_after} s for {args.storm:g} s")
    print(f"{'':20}{'last ms':>10}{'429s':>7}{'lost':>6}{'dup':>5}{'failures':>10}{'dead':>6}")
    for name, result in (("no storm (reference)", reference), ("429 storm", stormy)):
        print(f"{name:20}{result['elapsed'] * 1e3:10.0f}{result['throttled']:7d}{result['lost']:6d}"
              f"{result['duplicated']:5d}{result['failures']:10g}{result['dead']:6g}")
    extra = stormy["elapsed"] - reference["elapsed"]
    print(f"storm/reference: {stormy['elapsed'] / reference['elapsed']:.2f}x; the storm added {extra:.1f} s "
          f"for {args.storm:g} s of 429s ({extra / args.storm:.2f} s per storm second; 1.00 + at most one "
          f"Retry-After is ideal); 429s drawn: {stormy['throttled']} "
          f"(polite minimum ~{args.storm / args.retry_after:.0f})")
    clean = all(r["lost"] == r["duplicated"] == r["failures"] == r["dead"] == 0 for r in (reference, stormy))
    print(f"zero lost, duplicated, failed or dead-lettered: {'OK' if clean else 'MISSED'}")


if __name__ == "__main__":
    main()
