#!/usr/bin/env python3
"""A scrape with the right login and Alertmanager's alerts while peers without credentials flood
the relay's TLS port.

One relay with web_config_file (TLS, a bcrypt login of roles.pki's cost) at its smallest
max_connections. Reference, same run: on the idle relay, the first scrape (its login checked by
bcrypt), the next ones (remembered), and alert POSTs with the webhook's token, each on a new TLS
connection from 127.0.0.2. Then the same during a flood from 127.0.0.1 of --flooders peers (half
guessing passwords over TLS, reconnecting as soon as answered or pushed out; half holding
handshakes idle; tests/flooder.py), and the ratios. Before the fix the flooded requests were
refused (503: every connection was a guess waiting in one bcrypt queue).

Run from the repo root: .venv/bin/python bench/relay_login_flood.py [--flooders 128] [--requests 5]
  --relay-src DIR runs the relay from another tree's src/alert_relay (e.g. an older commit's) to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relay_common import relay_from  # noqa: E402
from alert_relay.config import RelayTuning  # noqa: E402
from tests.alert_relay.conftest import CHANNELS, FAXPLUS_TOKEN, SLACK_TOKEN, Relay  # noqa: E402
from tests.alert_relay.fakes import FakeFaxPlus, FakeSlack  # noqa: E402
from tests.alert_relay.test_tls import MAX_CONNECTIONS, post_alert, scrape, write_tls_files  # noqa: E402
from tests.flooder import Flooder  # noqa: E402

HEADER_TIMEOUT_S = RelayTuning().header_timeout_s


def timed(requests: int, relay: Relay, tls_files: Path) -> dict[str, list[float]]:
    """Seconds per scrape (the first one checks the login with bcrypt) and per alert; None when refused."""
    scrapes, alerts = [], []
    for n in range(requests):
        status, seconds, _ = scrape(relay, tls_files)
        scrapes.append(seconds if status == 200 else None)
        status, seconds, _ = post_alert(relay, tls_files, f"Bench{n}")
        alerts.append(seconds if status == 200 else None)
    return {"scrapes": scrapes, "alerts": alerts}


def measure(flooders: int, requests: int, relay_src: str | None) -> dict[str, dict]:
    results = {}
    slack, faxplus = FakeSlack(SLACK_TOKEN, CHANNELS).start(), FakeFaxPlus(FAXPLUS_TOKEN).start()
    try:
        for label in ("idle", "flood"):
            workdir = Path(tempfile.mkdtemp(prefix=f"relay-login-flood-{label}-"))
            relay_from(relay_src, workdir)
            tls_files = write_tls_files(workdir)
            relay = Relay(workdir / "relay", slack, faxplus, web_config_file=str(tls_files / "web.yml"),
                          max_connections=MAX_CONNECTIONS).start()
            flood = None
            try:
                if label == "flood":
                    port = int(relay.url.rsplit(":", 1)[1])
                    flood = Flooder(port, {"guess": flooders // 2, "idle": flooders - flooders // 2},
                                    seconds=requests * 4 * HEADER_TIMEOUT_S, tls=True)
                results[label] = timed(requests, relay, tls_files)
                if flood is not None:
                    results[label]["flood connections"] = flood.result()["connections"]
            finally:
                if flood is not None:
                    flood.stop()
                relay.stop()
    finally:
        slack.close()
        faxplus.close()
    return results


def shown(seconds: float | None) -> str:
    return "refused" if seconds is None else f"{seconds:.3f}s"


def ratio(flooded: list, idle: list) -> str:
    if None in flooded:
        return f"{flooded.count(None)} of {len(flooded)} refused"
    return f"{statistics.median(flooded) / statistics.median(idle):.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flooders", type=int, default=8 * MAX_CONNECTIONS)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--relay-src", help="a tree whose src/alert_relay to run instead of this one's")
    args = parser.parse_args()
    results = measure(args.flooders, args.requests, args.relay_src)
    idle, flood = results["idle"], results["flood"]
    print(f"max_connections {MAX_CONNECTIONS}, {args.flooders} flooders "
          f"({flood['flood connections']} connections made), {args.requests} requests each")
    print(f"{'':20}{'first scrape':>14}{'next scrapes':>14}{'worst':>10}{'alerts':>10}{'worst':>10}")
    for label, run in (("idle", idle), ("flood", flood)):
        scrapes, alerts = run["scrapes"], run["alerts"]
        next_median = statistics.median(s for s in scrapes[1:] if s is not None) if any(scrapes[1:]) else None
        worst = None if None in scrapes[1:] else max(scrapes[1:])
        alert_median = statistics.median(a for a in alerts if a is not None) if any(alerts) else None
        alert_worst = None if None in alerts else max(alerts)
        print(f"{label:20}{shown(scrapes[0]):>14}{shown(next_median):>14}{shown(worst):>10}"
              f"{shown(alert_median):>10}{shown(alert_worst):>10}")
    first = "refused" if flood["scrapes"][0] is None else f"{flood['scrapes'][0] / idle['scrapes'][0]:.1f}x"
    print(f"flood/idle: first scrape {first}; next scrapes (median) {ratio(flood['scrapes'][1:], idle['scrapes'][1:])}; "
          f"alerts (median) {ratio(flood['alerts'], idle['alerts'])}")


if __name__ == "__main__":
    main()
