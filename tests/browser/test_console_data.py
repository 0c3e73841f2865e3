"""Without JavaScript, a person uploads a CSV on the Data page (the plain form) and reads its statistics."""
from __future__ import annotations

import re

import pytest
from sklearn.datasets import load_breast_cancer


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    # The plain form is the fallback for browsers without JavaScript; the JS path has its own tests.
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 900}, "java_script_enabled": False}


def test_upload_csv_and_see_stats(page, live_stack, screenshot, tmp_path):
    team = live_stack.make_team()
    username, password, _ = live_stack.make_user(team, "member")
    csv = tmp_path / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(csv, index=False)

    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.click("nav a:has-text('Data')")
    assert "No datasets yet" in page.locator(f"table[data-team='{team}']").inner_text()
    page.select_option("#upload select[name=team]", team)
    page.fill("#upload input[name=name]", "cancer")
    page.set_input_files("#upload input[name=file]", str(csv))
    page.fill("#upload input[name=message]", "first import")
    page.click("#upload button[type=submit]")
    page.wait_for_url(re.compile(rf".*/data/{team}/cancer$"))
    assert "Uploaded version 1 of cancer" in page.locator(".flash.ok").inner_text()
    labels = page.locator("#labels").inner_text()
    assert "1: 357" in labels and "0: 212" in labels
    stats = page.locator("#stats").inner_text()
    assert "mean radius" in stats and "float" in stats
    assert page.locator("#preview tr").count() == 11
    assert page.locator("#preview th").first.inner_text().lower() == "mean radius"  # columns in file order
    assert "first import" in page.locator("#versions").inner_text()
    screenshot(page, "dataset-stats")

    page.click("nav a:has-text('Data')")
    page.select_option("#upload select[name=team]", team)
    page.fill("#upload input[name=name]", "cancer")
    page.set_input_files("#upload input[name=file]", str(csv))
    page.fill("#upload input[name=label_column]", "diagnosis")
    page.click("#upload button[type=submit]")
    error = page.locator("main.content > .flash.error").inner_text()
    assert "diagnosis" in error and "mean radius" in error
    screenshot(page, "data-upload-error")
