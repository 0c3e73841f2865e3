"""The Tuning console: the New study form refuses bad input clearly and keeps it, starts a study over a
built-in trainer, and the study's page follows its trials live (table, history, parallel coordinates)."""
from __future__ import annotations

import io
import re
import time

import pytest
import requests
from browser_helpers import login_as_member
from sklearn.datasets import load_breast_cancer


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def member(page, live_stack):
    """A new team, and the page logged in as a member of it; returns (team, api token)."""
    return login_as_member(page, live_stack)


def _upload_cancer(url: str, token: str, team: str) -> None:
    csv = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(index=False)
    response = requests.post(f"{url}/api/v1/teams/{team}/datasets/cancer/versions", timeout=60,
                             headers={"Authorization": f"Bearer {token}"}, data={"label_column": "label"},
                             files={"file": ("cancer.csv", io.BytesIO(csv.encode()))})
    assert response.ok, response.text


def _fill(page, **fields) -> None:
    for name, value in fields.items():
        page.fill(f"#new-study [name={name}]", str(value))


def _check_columns(page, url: str, token: str, study_url: str) -> None:
    study_id = study_url.rsplit("/", 1)[1]
    body = requests.get(f"{url}/api/v1/studies/{study_id}", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).json()
    keys = [th.strip() for th in page.locator("#trials thead th.param").all_inner_texts()][:-1]  # the last: metric
    assert keys == ["lr", "hidden", "dropout"], keys
    for trial in body["trials"]:
        cells = page.locator(f"#trials tbody tr[data-number='{trial['number']}'] td.mono").all_inner_texts()
        shown = dict(zip(keys, (float(c) for c in cells)))
        assert shown == pytest.approx(trial["params"], rel=1e-3), (shown, trial["params"])
        assert 0.0001 <= shown["lr"] <= 0.1 and shown["hidden"] in (32, 64, 128) and 0 <= shown["dropout"] <= 0.5


def test_new_study_runs_and_its_page_follows_the_trials(page, live_stack, member, screenshot):
    team, token = member
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    _upload_cancer(live_stack.url, token, team)

    page.goto("/tuning")
    assert "active" in page.locator("nav a:has-text('Tuning')").get_attribute("class")
    assert "No studies yet" in page.locator("#studies").inner_text()
    default_space = page.input_value("#study-space")
    assert '"lr"' in default_space and '"hidden"' in default_space and '"log": true' in default_space

    # bad input: the server's message, and the form keeps what was typed
    page.select_option("#study-trainer", "tabular")
    page.select_option("#study-dataset", "cancer")
    _fill(page, name="cancer-tune", trials=3, parallel=2, epochs=2)
    page.fill("#study-space", '{"lr": {"type": "float", "low": 0.001')
    page.click("#new-study button[type=submit]")
    assert "search space is not valid JSON" in page.locator(".flash.error").inner_text()
    assert page.input_value("#new-study [name=name]") == "cancer-tune"
    assert page.input_value("#new-study [name=trials]") == "3"
    assert page.input_value("#study-space") == '{"lr": {"type": "float", "low": 0.001'
    page.fill("#study-space", '{"lr": {"type": "float", "low": 0.1, "high": 0.01}}')
    page.click("#new-study button[type=submit]")
    assert "space.lr: low (0.1) must be below high (0.01)" in page.locator(".flash.error").inner_text()
    screenshot(page, "tuning-form-error")

    # the default space again (a new form), and the study starts
    page.goto("/tuning")
    assert page.input_value("#study-space") == default_space
    page.select_option("#study-trainer", "image")  # an untouched space follows the trainer
    assert page.input_value("#study-space") != default_space and "16" in page.input_value("#study-space")
    page.select_option("#study-trainer", "tabular")
    assert page.input_value("#study-space") == default_space
    page.select_option("#study-dataset", "cancer")
    _fill(page, name="cancer-tune", metric="val_acc", trials=3, parallel=2, epochs=2)
    page.click("#new-study button[type=submit]")
    page.wait_for_url(re.compile(r".*/studies/[0-9a-f-]+$"))
    study_url = page.url
    assert "Started study cancer-tune" in page.locator(".flash.ok").inner_text()
    assert page.locator("#study-state").inner_text() == "running"
    assert "maximise val_acc" in page.locator("#study").inner_text()
    assert page.locator("#stop-form").is_visible()

    # the page polls: trials appear, then values
    page.wait_for_function("() => document.querySelectorAll('#trials tbody tr[data-number]').length >= 1",
                           timeout=30_000)
    screenshot(page, "tuning-study-running")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"#trials tbody tr[data-state='complete'] td.value\")]"
        ".some(td => td.textContent.trim() !== '')", timeout=120_000)
    deadline = time.monotonic() + 90
    while page.locator("#study-state").inner_text() == "running":
        assert time.monotonic() < deadline, page.locator("#study").inner_text()
        time.sleep(1)
    assert page.locator("#study-state").inner_text() == "succeeded", page.locator("#study").inner_text()
    assert not page.locator("#stop-form").is_visible()
    rows = page.locator("#trials tbody tr[data-number]")
    assert rows.count() == 3
    assert page.locator("#trials tbody tr[data-state='complete']").count() == 3
    headers = page.locator("#trials thead").inner_text()
    assert "lr" in headers and "hidden" in headers and "dropout" in headers
    # the history chart has every trial; the best-so-far line and the parallel coordinates follow
    assert page.locator("#history").get_attribute("data-points") == "3"
    assert page.locator("#history canvas").count() >= 1
    assert page.locator("#study-parallel svg .trial-line").count() == 3
    assert page.locator("#study-parallel svg .axis[data-key='lr'] .axis-kind").text_content() == "float · log"
    assert page.locator("#study-parallel svg .axis[data-key='hidden'] .axis-kind").text_content() == "choice"
    # each param column holds that param (as drawn, in its range), whether polled or drawn from the page's data
    _check_columns(page, live_stack.url, token, study_url)
    page.reload()
    _check_columns(page, live_stack.url, token, study_url)
    best = page.locator("#best-value").inner_text()
    values = [float(v) for v in page.locator("#trials tbody td.value").all_inner_texts()]
    assert float(best) == pytest.approx(max(values), rel=1e-3)
    # importances: three complete trials are enough, unless their values were all the same
    page.wait_for_function("() => document.querySelector('#importance .imp-row, #importance p')")
    importance = page.locator("#importance").inner_text()
    assert page.locator("#importance .imp-row").count() == 3 or "at least 3 complete trials" in importance
    screenshot(page, "tuning-study")

    # the best trial links to its job and its run
    page.click("#best-run")
    page.wait_for_url(re.compile(r".*/experiments/runs/[0-9a-f-]+$"))
    assert "cancer-tune-trial-" in page.locator("h1").inner_text()
    page.goto(study_url)
    page.click("#best-job")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]+$"))
    assert "built-in trainer" in page.locator(".job-head").inner_text()

    # one click registers the best trial's model: its page shows version 1 with the run as lineage
    page.goto(study_url)
    page.fill("#register-best input[name=model]", "cancer-best")
    page.click("#register-best button[type=submit]")
    page.wait_for_url(re.compile(r".*/models/[^/]+/cancer-best(\?.*)?$"))
    assert "Registered cancer-best v1" in page.locator(".flash.ok").inner_text()
    screenshot(page, "tuning-best-registered")

    # the studies list shows it
    page.goto("/tuning")
    row = page.locator("#studies tr[data-study]")
    assert row.count() == 1
    text = row.inner_text()
    assert "cancer-tune" in text and "succeeded" in text and "3 / 3" in text and "tpe" in text
    screenshot(page, "tuning-list")

    # a study name may only be used once per team: the service's message
    page.select_option("#study-dataset", "cancer")
    _fill(page, name="cancer-tune", trials=1)
    page.click("#new-study button[type=submit]")
    assert "already has a study named 'cancer-tune'" in page.locator(".flash.error").inner_text()
    assert script_errors == []


def test_stop_and_extend_from_the_study_page(page, live_stack, member, screenshot):
    team, token = member
    _upload_cancer(live_stack.url, token, team)
    page.goto("/tuning")
    page.select_option("#study-dataset", "cancer")
    _fill(page, name="to-stop", trials=20, parallel=1, epochs=200)
    page.click("#new-study button[type=submit]")
    page.wait_for_url(re.compile(r".*/studies/[0-9a-f-]+$"))
    page.click("#stop-study")
    assert "Study stopped" in page.locator(".flash.ok").inner_text()
    assert page.locator("#study-state").inner_text() == "stopped"
    assert page.locator("#study-reason").inner_text().startswith("stopped by ")
    assert not page.locator("#stop-form").is_visible()
    page.fill("#extend-form input[name=trials]", "0")
    page.eval_on_selector("#extend-form", "f => { f.noValidate = true; }")  # the server checks it too
    page.click("#extend-study")
    assert "trials must be a whole number from 1" in page.locator(".flash.error:not([hidden])").inner_text()
    page.fill("#extend-form input[name=trials]", "1")
    page.click("#extend-study")
    assert "Added 1 trial(s)." in page.locator(".flash.ok").inner_text()
    assert page.locator("#study-state").inner_text() == "running"
    screenshot(page, "tuning-study-extended")
    page.click("#stop-study")  # leave nothing running for the other tests
    assert page.locator("#study-state").inner_text() == "stopped"
