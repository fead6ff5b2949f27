"""`alert-relay --config FILE --check-slack` / `--check-faxplus`: ask Slack and FAX.PLUS, with the
configured tokens, whether delivery would work, before the first alert needs it. One line per problem.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from alert_relay.routes import SlackRoutes
from alert_relay.slack import faxplus_api_url, slack_api_url

# What each feature needs (README "Slack app"); private channels need the groups:* twins.
SCOPES_ALWAYS = {
    "chat:write": "post and update alert messages",
    "channels:history": "look for a message whose send was cut off before sending it again",
}
SCOPES_FOR_NAMES = {
    "channels:read": "find #name channels (conversations.list)",
    "groups:read": "find private #name channels (conversations.list lists them only with it)",
}
SCOPES_FOR_FAXES = {"files:write": "upload faxes"}
SCOPES_PRIVATE = {"groups:history": "look for cut-off sends in a private channel"}


def routed_channels(routes: SlackRoutes) -> dict[str, set[str]]:
    """Each channel routes name -> what goes there ("alerts", "faxes")."""
    channels: dict[str, set[str]] = {routes.default_channel: {"alerts"}}
    for route in routes.alerts:
        channels.setdefault(route.channel, set()).add("alerts")
    for route in routes.faxes:
        channels.setdefault(route.channel, set()).add("faxes")
    return channels


def check_slack(token: str, base_url: str, routes: SlackRoutes) -> list[str]:
    client = WebClient(token=token, base_url=slack_api_url(base_url), timeout=15, retry_handlers=[])
    try:
        identity = client.auth_test()
    except SlackApiError as exc:
        return [f"slack: auth.test refused the token in slack_token_file: {exc.response.get('error')}"]
    granted = {s.strip() for s in (identity.headers.get("x-oauth-scopes") or identity.headers.get("X-OAuth-Scopes") or "").split(",") if s.strip()}
    channels = routed_channels(routes)
    needed = dict(SCOPES_ALWAYS)
    if any(name.startswith("#") for name in channels):
        needed.update(SCOPES_FOR_NAMES)
    if any("faxes" in uses for uses in channels.values()):
        needed.update(SCOPES_FOR_FAXES)
    problems = [f"slack: missing scope {scope} (to {why})" for scope, why in sorted(needed.items()) if scope not in granted]

    ids: dict[str, str] = {}
    if any(name.startswith("#") for name in channels):
        # Without groups:read (reported above) the public channels can still be checked.
        for types in ("public_channel,private_channel", "public_channel"):
            try:
                cursor = None
                while True:
                    page = client.conversations_list(types=types, limit=1000, cursor=cursor)
                    ids.update({f"#{c['name']}": c["id"] for c in page["channels"]})
                    cursor = (page.get("response_metadata") or {}).get("next_cursor")
                    if not cursor:
                        break
                break
            except SlackApiError as exc:
                if exc.response.get("error") != "missing_scope":
                    problems.append(f"slack: conversations.list: {exc.response.get('error')}")
                    break
    for name, uses in sorted(channels.items()):
        what = " and ".join(sorted(uses))
        channel_id = ids.get(name) if name.startswith("#") else name
        if channel_id is None:
            problems.append(f"slack: channel {name} ({what}) not found: a typo, or a private channel the bot is not in")
            continue
        try:
            info = client.conversations_info(channel=channel_id)["channel"]
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "missing_scope":
                problems.append(f"slack: channel {name}: cannot check it, missing scope {exc.response.get('needed')}")
            else:
                problems.append(f"slack: channel {name} ({what}): {error}")
            continue
        if info.get("is_archived"):
            problems.append(f"slack: channel {name} ({what}) is archived")
        if not info.get("is_member"):
            problems.append(f"slack: bot not in channel {name} ({what}): invite it with /invite")
        if info.get("is_private"):
            problems += [f"slack: missing scope {scope} (to {why}: {name} is private)"
                         for scope, why in SCOPES_PRIVATE.items() if scope not in granted]
    return sorted(set(problems), key=problems.index)


def check_faxplus(token: str, base_url: str) -> list[str]:
    """The account endpoint (any read scope) and the files endpoint's scope (fax:fax:read), the
    latter asked for a fax that does not exist: 404 means the token may download files."""
    api = faxplus_api_url(base_url)
    problems = []
    for path, what in (("/accounts/self", "account endpoint (fax:user:read)"),
                       ("/accounts/self/files/alert-relay-check?format=pdf", "files endpoint (fax:fax:read)")):
        request = urllib.request.Request(api + path, headers={"Accept": "application/json"})
        request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                json.loads(response.read() or b"{}") if path == "/accounts/self" else None
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and "files" in path:
                continue
            reason = {401: "the token in faxplus_token_file is refused",
                      403: "the token lacks the scope"}.get(exc.code, exc.reason)
            problems.append(f"faxplus: {what}: HTTP {exc.code}, {reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problems.append(f"faxplus: {what}: cannot reach {api}: {getattr(exc, 'reason', exc)}")
            break
    return problems
