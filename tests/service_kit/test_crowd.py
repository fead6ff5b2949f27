"""Which unproven connection makes room: the oldest of the address holding the most."""

from __future__ import annotations

from service_kit.crowd import Unproven


def test_the_address_holding_the_most_gives_up_its_oldest():
    crowd = Unproven()
    crowd.add("10.0.0.1", "scraper")
    for n in range(3):
        crowd.add("10.0.0.9", f"flood-{n}")
    crowd.add("10.0.0.2", "client")
    assert crowd.count == 5
    # The flood's own connections go, oldest first, until it holds no more than the others.
    assert crowd.push_out() == ("10.0.0.9", "flood-0")
    assert crowd.push_out() == ("10.0.0.9", "flood-1")
    # Among equals (one each), the oldest connection goes: the scraper came first.
    assert crowd.push_out() == ("10.0.0.1", "scraper")
    assert crowd.count == 2


def test_a_proven_connection_is_forgotten_and_cannot_be_pushed_out():
    crowd = Unproven()
    crowd.add("10.0.0.1", "scraper")
    crowd.add("10.0.0.9", "flood")
    assert crowd.discard("10.0.0.1", "scraper")
    assert not crowd.discard("10.0.0.1", "scraper")  # already gone: nothing changes
    assert crowd.by_address.keys() == {"10.0.0.9"} and crowd.count == 1
    assert crowd.push_out() == ("10.0.0.9", "flood")
    assert crowd.push_out() is None and crowd.count == 0 and not crowd.by_address
