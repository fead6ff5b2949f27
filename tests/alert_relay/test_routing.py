"""Routing and repeat keys, in process: what decides where a notification goes and whether it is new."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from alert_relay.routes import SlackRoutes, e164
from alert_relay.server import AlertmanagerNotification, alert_messages
from tests.alert_relay.conftest import ROUTES, notification

ROUTING = SlackRoutes.model_validate(ROUTES["slack"])


def group(alerts: list[dict], status: str = "firing") -> AlertmanagerNotification:
    payload = notification("DiskFull")
    payload.update(status=status, groupKey='{}:{alertname="DiskFull"}', alerts=alerts)
    return AlertmanagerNotification.model_validate(payload)


def disk_alert(node: int, severity: str, status: str = "firing", starts_at: str = "2024-05-01T10:00:00Z") -> dict:
    alert = notification("DiskFull", instance=f"node-{node}", severity=severity, status=status, starts_at=starts_at)
    alert["alerts"][0]["fingerprint"] = f"fp{node:04d}{severity}"
    return alert["alerts"][0]


alerts_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["warning", "critical"]), st.sampled_from(["firing", "resolved"])),
    min_size=1, max_size=12, unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=150, deadline=None)
@given(alerts_strategy, st.randoms())
def test_the_order_of_alerts_does_not_change_what_is_queued(specs, rng):
    alerts = [disk_alert(*spec) for spec in specs]
    shuffled = list(alerts)
    rng.shuffle(shuffled)
    first = {key: channel for key, _kind, channel, _payload in alert_messages(group(alerts), ROUTING)}
    second = {key: channel for key, _kind, channel, _payload in alert_messages(group(shuffled), ROUTING)}
    assert first == second
    # Every alert lands in exactly the channel its own labels route to.
    for key, _kind, channel, payload in alert_messages(group(alerts), ROUTING):
        assert all(ROUTING.alert_channel(a["labels"]) == channel for a in payload["alerts"])


@settings(max_examples=100, deadline=None)
@given(alerts_strategy)
def test_a_state_change_or_a_new_firing_is_never_taken_for_a_repeat(specs):
    alerts = [disk_alert(*spec) for spec in specs]
    keys = {key for key, *_ in alert_messages(group(alerts), ROUTING)}
    node, severity, status = specs[0]
    flipped = [disk_alert(node, severity, "resolved" if status == "firing" else "firing"), *alerts[1:]]
    refired = [disk_alert(node, severity, status, starts_at="2024-05-02T08:00:00Z"), *alerts[1:]]
    channel = ROUTING.alert_channel(alerts[0]["labels"])
    for changed in (flipped, refired):
        changed_keys = {key: ch for key, _k, ch, _p in alert_messages(group(changed), ROUTING)}
        assert any(ch == channel and key not in keys for key, ch in changed_keys.items())


@given(st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True),
       st.sampled_from(["+{}", "+{} ", "00{}", " +{}"]))
def test_e164_is_stable_across_spellings(digits, spelling):
    assert e164(spelling.format(digits)) == f"+{digits}"
    assert e164(e164(spelling.format(digits))) == f"+{digits}"
