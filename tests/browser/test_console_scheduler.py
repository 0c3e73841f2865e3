"""The scheduler in the console: a job waits on its team's quota (and says so); an admin raises the
quota on the Admin page and the job starts on a simulated GPU, visible on the Fleet page."""
from __future__ import annotations

import time

import pytest
from test_console_jobs import _submit


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture
def gpu_worker(live_stack):
    """A worker with one simulated GPU (as OFFICINA_WORKER_SIMULATED_GPUS=1)."""
    from officina.infra.processes import PROCESS_TYPES

    settings = live_stack.settings.model_copy(update={"worker_simulated_gpus": 1, "worker_queues": "gpu"})
    child = live_stack.stack.supervisor.start(PROCESS_TYPES["worker"](settings, 31))
    yield
    live_stack.stack.supervisor.stop(child.name)


def _job(live_stack, job_id: str) -> dict:
    import requests

    return requests.get(f"{live_stack.url}/api/v1/jobs/{job_id}", timeout=30,
                        headers={"Authorization": f"Bearer {live_stack.admin_token}"}).json()["job"]


def test_admin_raises_a_quota_and_the_waiting_job_starts(page, live_stack, gpu_worker, screenshot):
    import requests

    team = live_stack.make_team()
    headers = {"Authorization": f"Bearer {live_stack.admin_token}"}
    assert requests.put(f"{live_stack.url}/api/v1/teams/{team}/quota", json={"max_gpus": 0}, headers=headers,
                        timeout=30).status_code == 200
    script = "import os, time\nprint('on GPU', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\ntime.sleep(8)\n"
    job_id = _submit(live_stack, live_stack.admin_token, team, script, gpus=1, name="main")
    deadline = time.monotonic() + 30
    while _job(live_stack, job_id)["reason"] != "waiting: team quota 0/0 GPUs in use":
        assert time.monotonic() < deadline, _job(live_stack, job_id)
        time.sleep(0.3)

    page.goto("/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", live_stack.admin_password)
    page.click("button[type=submit]")
    page.goto("/admin")
    queued = page.locator(f"#queue tr[data-job='{job_id}']")
    assert "waiting: team quota 0/0 GPUs in use" in queued.inner_text()
    screenshot(page, "admin-queue-waiting")

    row = page.locator(f"#quotas tr[data-team='{team}']")
    row.locator("input[name=max_gpus]").fill("1")
    row.locator("button[type=submit]").click()
    assert f"Quota of team {team} updated." in page.locator(".flash.ok").inner_text()

    # the quota change wakes the scheduler: the job starts on the simulated GPU
    page.goto(f"/jobs/{job_id}")
    page.wait_for_function("() => document.getElementById('job-log').textContent.includes('on GPU 0')",
                           timeout=30_000)
    # (the page reloads once by itself to link the job's run; let that happen before leaving it)
    page.wait_for_selector("a.run-link", timeout=15_000)
    page.wait_for_load_state()
    page.goto("/fleet")
    holder = page.locator("#workers tr[data-worker^='worker31@'] .gpu-row[data-gpu='0']")
    assert team in holder.inner_text() and "main" in holder.inner_text()
    assert "running" in page.locator(f"#queue tr[data-job='{job_id}']").inner_text()
    screenshot(page, "fleet-gpu-holder")
    page.goto("/admin")
    assert "1 / 1" in page.locator(f"#quotas tr[data-team='{team}']").inner_text()
    screenshot(page, "admin-quota-in-use")
