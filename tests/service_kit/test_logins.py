"""Logins with real bcrypt hashes and a real event loop: who gets in, what is remembered, and that
a flood of guesses from one address does not queue ahead of another address's login."""

from __future__ import annotations

import asyncio
import base64

import bcrypt
import pytest
from service_kit.logins import Logins, basic_credentials, hashed_logins

# Cost 10 as roles.pki hashes them: each check takes tens of milliseconds, so queues form.
USERS = {"prometheus": bcrypt.hashpw(b"right", bcrypt.gensalt(10)).decode()}


def header(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def run(scenario):
    logins = Logins(hashed_logins(USERS))
    try:
        return asyncio.run(scenario(logins))
    finally:
        logins.close()


def test_only_a_listed_login_gets_in_and_only_it_is_remembered():
    async def scenario(logins: Logins):
        assert not await logins.allow(None, "10.0.0.1")
        assert not await logins.allow(b"Bearer " + base64.b64encode(b"prometheus:right"), "10.0.0.1")
        assert not await logins.allow(header("prometheus", "wrong"), "10.0.0.1")
        assert not await logins.allow(header("grafana", "right"), "10.0.0.1")
        assert not logins.remembered(header("prometheus", "right"))
        assert await logins.allow(header("prometheus", "right"), "10.0.0.1")
        assert logins.remembered(header("prometheus", "right"))
        assert not logins.remembered(header("prometheus", "wrong"))
        assert logins.verified.keys() == {"prometheus"} and not logins.turns

    run(scenario)


def test_an_unknown_user_takes_a_bcrypt_check_like_a_wrong_password():
    async def scenario(logins: Logins):
        check = asyncio.ensure_future(logins.allow(header("nobody", "right"), "10.0.0.1"))
        await asyncio.sleep(0)
        assert logins.pending() == 1  # queued for the bcrypt thread, not refused at once
        assert not await check and logins.pending() == 0

    run(scenario)


def test_a_flood_of_guesses_from_one_address_queues_behind_its_own_turn():
    async def scenario(logins: Logins):
        guesses = [asyncio.ensure_future(logins.allow(header("prometheus", f"guess-{n}"), "10.0.0.9"))
                   for n in range(20)]
        await asyncio.sleep(0)
        login = await logins.allow(header("prometheus", "right"), "10.0.0.1")
        # The login waited behind the flood's first check at most: the others are still queued.
        left = sum(not guess.done() for guess in guesses)
        for guess in guesses:
            guess.cancel()
        return login, left, await asyncio.gather(*guesses, return_exceptions=True), logins.pending(), logins.turns

    login, left, _, pending, turns = run(scenario)
    assert login and left >= 18, left
    # Cancelled checks leave their turn (the connection is gone): nothing stays queued.
    assert pending == 0 and turns == {}


@pytest.mark.parametrize("users, expected", [
    ({"prometheus": "plain-text"}, "basic_auth_users: prometheus: expected a bcrypt hash such as $2y$10$..."),
    ({"prometheus": USERS["prometheus"], 7: USERS["prometheus"]}, "basic_auth_users: 7: expected a bcrypt hash"),
])
def test_a_login_that_is_not_a_bcrypt_hash_is_named(users, expected):
    with pytest.raises(ValueError, match="^" + expected.replace("$", r"\$").replace(".", r"\.")):
        hashed_logins(users)


@pytest.mark.parametrize("value", [None, b"", b"Basic", b"Basic !!!", b"Basic " + base64.b64encode(b"no-colon"),
                                   b"Digest " + base64.b64encode(b"a:b")])
def test_a_header_without_basic_credentials_gives_none(value):
    assert basic_credentials(value) is None


def test_basic_credentials_keep_colons_in_the_password():
    assert basic_credentials(b"basic  " + base64.b64encode(b"prometheus:a:b")) == ("prometheus", b"a:b")
