"""The Jobs console: a job's page tails its live log and state, and its cancel button stops it."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from browser_helpers import login_as_member


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def member(page, live_stack):
    """A new team, and the page logged in as a member of it; returns (team, api token)."""
    return login_as_member(page, live_stack)


def _submit(live_stack, token: str, team: str, script: str, **spec) -> str:
    """Upload ``script`` as main.py and submit it (``spec`` adds job fields such as ``gpus``); return its id."""
    import requests

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    sha = hashlib.sha256(body).hexdigest()
    headers = {"Authorization": f"Bearer {token}"}
    requests.put(f"{live_stack.url}/api/v1/teams/{team}/code/{sha}", data=body, headers=headers,
                 timeout=30).raise_for_status()
    response = requests.post(f"{live_stack.url}/api/v1/teams/{team}/jobs", headers=headers, timeout=30,
                             json={"entrypoint": "main.py", "code": sha, "name": "ticker", "project": "console", **spec})
    response.raise_for_status()
    return response.json()["job"]["id"]


def test_job_page_tails_the_log_and_cancels(page, live_stack, member, screenshot):
    team, token = member
    job_id = _submit(live_stack, token, team,
                     "import sys, time\nfor i in range(300):\n    print('tick', i, flush=True)\n"
                     "    if i == 2: print('a warning', file=sys.stderr, flush=True)\n    time.sleep(0.1)\n")
    page.goto("/jobs")
    page.click("text=ticker")
    page.wait_for_url(f"**/jobs/{job_id}")
    page.wait_for_function("() => document.getElementById('job-log').textContent.includes('tick 8')", timeout=30_000)
    assert page.locator("#job-state").inner_text() == "running"
    assert page.locator("#job-log .stderr").first.inner_text().strip() == "a warning"
    screenshot(page, "jobs-running")
    page.click("#cancel-job")
    page.wait_for_function("() => document.getElementById('job-state').textContent === 'cancelled'",
                           timeout=30_000)
    # once the job ends the page reloads itself to show the final events
    page.wait_for_function("() => document.querySelector('table.events').innerText.includes('cancelled on request')",
                           timeout=30_000)
    assert "cancel requested" in page.locator("table.events").inner_text()
    screenshot(page, "jobs-cancelled")


def test_submit_form_shows_errors(page, live_stack, member):
    team, _ = member
    page.goto("/jobs")
    page.fill("textarea[name=params]", "{not json")
    page.click("#submit-job button[type=submit]")
    assert "params must be a JSON object" in page.locator(".flash.error").inner_text()


def test_fleet_page_lists_the_workers(page, live_stack, member, screenshot):
    page.goto("/fleet")
    row = page.locator("table.fleet tr[data-worker]").first
    assert "online" in row.inner_text() and "cpu" in row.inner_text()
    screenshot(page, "fleet")


def test_admin_changes_a_team_quota(page, live_stack, screenshot):
    team = live_stack.make_team()
    page.goto("/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", live_stack.admin_password)
    page.click("button[type=submit]")
    page.goto("/admin")
    row = page.locator(f"#quotas tr[data-team='{team}']")
    row.locator("input[name=max_gpus]").fill("4")
    row.locator("select[name=max_priority]").select_option("normal")
    row.locator("button[type=submit]").click()
    assert f"Quota of team {team} updated." in page.locator(".flash.ok").inner_text()
    row = page.locator(f"#quotas tr[data-team='{team}']")
    assert row.locator("input[name=max_gpus]").input_value() == "4"
    assert "0 / 4" in row.inner_text()
    screenshot(page, "admin-quotas")
    row.locator("input[name=max_gpus]").fill("-2")
    row.locator("button[type=submit]").click()
    assert "max_gpus" in page.locator(".flash.error").inner_text()
    from officina import sdk

    sdk.connect(live_stack.url, live_stack.admin_token)
    try:
        assert sdk.admin.quota(team)["max_gpus"] == 4 and sdk.admin.quota(team)["max_priority"] == "normal"
    finally:
        sdk.connect(live_stack.url, "")
