"""A person logs into the console, looks around, creates an API token and logs out."""
from __future__ import annotations

import re

import pytest


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 800}}


def test_login_overview_token_logout(page, live_stack, screenshot):
    page.goto("/")
    assert page.url.endswith("/login?next=/") or "/login" in page.url
    screenshot(page, "login")

    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert "wrong username or password" in page.locator("[role=alert]").inner_text()
    screenshot(page, "login-wrong-password")

    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", live_stack.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    assert page.locator("#whoami").inner_text() == "admin"
    for area in ("Data", "Labeling", "Experiments", "Tuning", "Models", "Deployments", "Monitoring", "Admin"):
        assert page.locator("nav a", has_text=area).count() == 1, area
    health = page.locator("#health").inner_text()
    for component in ("db", "s3", "broker", "workers"):
        assert component in health
    assert page.locator("#health td.bad").count() == 0, health
    screenshot(page, "overview")

    page.click("nav a:has-text('API tokens')")
    page.fill("input[name=name]", "browser-token")
    page.click("button:has-text('Create token')")
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("off_")
    assert "browser-token" in page.locator("#tokens").inner_text()
    screenshot(page, "tokens")

    from officina import sdk

    sdk.connect(live_stack.url, token)
    assert sdk.whoami()["user"]["username"] == "admin"

    page.click("nav a:has-text('Admin')")
    page.fill("form:has(input[value=create_team]) input[name=name]", "browser-team")
    page.click("button:has-text('Create team')")
    assert "browser-team" in page.locator("#teams").inner_text()
    screenshot(page, "admin")

    page.click("button:has-text('Log out')")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto("/settings/tokens")
    assert "/login" in page.url
