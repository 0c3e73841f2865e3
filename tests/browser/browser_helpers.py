"""Helpers shared by the browser tests."""
from __future__ import annotations


def login_as_member(page, live_stack) -> tuple[str, str]:
    """A new team and a member of it, logged in on ``page`` (whose base_url is the live stack); returns
    (team, the member's API token)."""
    import re

    team = live_stack.make_team()
    username, password, token = live_stack.make_user(team, "member")
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return team, token
