"""The Data console over the builds API: upload with progress (files, folders, drops), split, tags, derive, diff.

Each test drives real Chromium against the live stack; builds run on its real Celery worker.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from browser_helpers import login_as_member
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits

BUILD_TIMEOUT_MS = 60_000


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def member(page, live_stack) -> str:
    """A new team, and the page logged in as a member of it; returns the team."""
    return login_as_member(page, live_stack)[0]


def _wait_done(page, box: str = "#upload-progress") -> None:
    """Wait for a progress box to reach done (polled often: the page moves on shortly after)."""
    page.wait_for_function(
        "sel => { const b = document.querySelector(sel);"
        " if (b && b.dataset.state === 'failed') throw new Error(document.body.innerText); "
        " return b && b.dataset.state === 'done'; }",
        arg=box, polling=50, timeout=BUILD_TIMEOUT_MS)


def _digits_folder(root, indices) -> None:
    digits = load_digits()
    for i in indices:
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(folder / f"{i:04d}.png")


def test_csv_upload_with_progress_then_split_tag_derive_and_diff(page, member, screenshot, tmp_path):
    team = member
    csv = tmp_path / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(csv, index=False)

    page.goto("/data")
    page.select_option("#upload select[name=team]", team)
    page.fill("#upload input[name=name]", "cancer")
    page.set_input_files("#upload input[name=file]", str(csv))
    assert "1 file" in page.locator("#upload [data-selection]").inner_text()
    page.fill("#upload input[name=message]", "first import")
    page.click("#upload button[type=submit]")
    _wait_done(page)
    assert "version 1 is ready" in page.locator("#upload-progress").inner_text()
    screenshot(page, "datasets-upload-done")
    page.wait_for_url(re.compile(rf".*/data/{team}/cancer\?version=1$"), timeout=BUILD_TIMEOUT_MS)
    labels = page.locator("#labels").inner_text()
    assert "1: 357" in labels and "0: 212" in labels
    assert "mean radius" in page.locator("#stats").inner_text()
    assert "first import" in page.locator("#versions").inner_text()

    # Split v1 80/10/10, stratified: the new version shows its split counts.
    page.fill("#split input[name=message]", "holdout")
    page.click("#split button[type=submit]")
    page.wait_for_url(re.compile(r".*/builds/[0-9a-f-]+\?follow=1$"))
    _wait_done(page, "#build-progress")
    assert "version 2 is ready" in page.locator("#build").inner_text()
    screenshot(page, "datasets-split-build")
    page.wait_for_url(re.compile(rf".*/data/{team}/cancer\?version=2$"), timeout=BUILD_TIMEOUT_MS)
    counts = {row.get_attribute("data-split"): int(row.locator("td.num").inner_text())
              for row in page.locator("#splits tr[data-split]").all()}
    assert counts == {"train": 455, "val": 57, "test": 57}
    assert "split of v1" in page.locator("#versions tr[data-version='2']").inner_text()
    screenshot(page, "datasets-split")

    # Tag v1 golden; latest cannot be removed by hand (no button), golden can.
    page.fill("#move-tag input[name=tag]", "golden")
    page.select_option("#move-tag select[name=version]", "1")
    page.click("#move-tag button[type=submit]")
    assert "golden now points at v1" in page.locator(".flash.ok").inner_text()
    assert "v1" in page.locator("#tag-list tr[data-tag=golden]").inner_text()
    assert page.locator("#tag-list tr[data-tag=latest] button").count() == 0
    assert "golden" in page.locator("#versions tr[data-version='1']").inner_text()

    # Derive from v1: keep rows with mean radius < 15.
    page.goto(f"/data/{team}/cancer?version=1")
    page.locator("#derive select[name=filter_column]").first.select_option("mean radius")
    page.locator("#derive select[name=filter_op]").first.select_option("<")
    page.locator("#derive input[name=filter_value]").first.fill("15")
    page.fill("#derive input[name=message]", "small tumours")
    page.click("#derive button[type=submit]")
    page.wait_for_url(re.compile(rf".*/data/{team}/cancer\?version=3$"), timeout=BUILD_TIMEOUT_MS)
    rows = int(page.locator("#versions tr[data-version='3'] td.num").nth(1).inner_text())
    assert 0 < rows < 569
    assert "derived from v1" in page.locator("#versions tr[data-version='3']").inner_text()
    assert page.locator("#builds tr[data-status=done]").count() == 3

    # Diff v1 → v3: rows removed, stats side by side.
    page.select_option("#compare select[name=from]", "1")
    page.select_option("#compare select[name=to]", "3")
    page.click("#compare button[type=submit]")
    page.wait_for_url(re.compile(r".*/diff\?from=1&to=3$"))
    summary = page.locator("#row-summary").inner_text()
    assert f"−{569 - rows} removed" in summary and f"{rows} unchanged" in summary
    assert page.locator("#stats-diff tr[data-column='mean radius'] td").count() == 9
    assert page.locator("#label-diff tr[data-label='0']").count() == 1
    screenshot(page, "datasets-diff-tabular")

    page.goto(f"/data/{team}/cancer")
    page.click("#tag-list tr[data-tag=golden] button")
    assert "Tag golden removed" in page.locator(".flash.ok").inner_text()
    page.wait_for_function("() => document.querySelectorAll('#tag-list tr[data-tag]').length === 1")  # only latest


def test_folder_upload_add_files_derive_and_diff_images(page, member, screenshot, tmp_path):
    team = member
    _digits_folder(tmp_path / "digits", range(40))
    _digits_folder(tmp_path / "more" / "extra", range(40, 43))

    page.goto("/data")
    page.select_option("#upload select[name=team]", team)
    page.fill("#upload input[name=name]", "digits")
    page.set_input_files("#upload input[data-folder]", str(tmp_path / "digits"))
    selection = page.locator("#upload [data-selection]").inner_text()
    assert "40 files in 10 folders" in selection and "0/0000.png" in selection  # the dropped root is stripped
    page.click("#upload button[type=submit]")
    _wait_done(page)
    page.wait_for_url(re.compile(rf".*/data/{team}/digits\?version=1$"), timeout=BUILD_TIMEOUT_MS)
    assert page.locator("#thumbnails img").count() == 32
    assert sum(int(x.split(": ")[1]) for x in page.locator("#labels .pill").all_inner_texts()) == 40

    # Add a version: three more images on top of v1's files.
    assert page.locator("#add-version input[name=base]").is_checked()
    page.set_input_files("#add-version input[data-folder]", str(tmp_path / "more" / "extra"))
    page.fill("#add-version input[name=message]", "three more")
    page.click("#add-version button[type=submit]")
    _wait_done(page)
    page.wait_for_url(re.compile(rf".*/data/{team}/digits\?version=2$"), timeout=BUILD_TIMEOUT_MS)
    assert page.locator("#versions tr[data-version='2'] td.num").first.inner_text() == "43"

    # A file that does not belong in an images dataset: the build fails, its message shows here and in the list.
    (tmp_path / "notes.txt").write_text("not an image\n")
    page.set_input_files("#add-version input[name=file]", str(tmp_path / "notes.txt"))
    page.click("#add-version button[type=submit]")
    error = page.locator("#upload-error")
    error.wait_for(state="visible", timeout=BUILD_TIMEOUT_MS)
    message = error.inner_text().removeprefix("Upload failed: ")
    assert "notes.txt" in message
    page.reload()
    assert message in page.locator("#builds tr[data-status=failed]").inner_text()
    assert page.locator("#versions tr[data-version]").count() == 2

    # Derive from v2: remove one image, relabel another.
    files = page.locator("#files td:first-child").all_inner_texts()
    page.fill("#derive textarea[name=remove]", files[0])
    page.fill("#derive textarea[name=relabel]", f"{files[1]}=9")
    page.click("#derive button[type=submit]")
    page.wait_for_url(re.compile(rf".*/data/{team}/digits\?version=3$"), timeout=BUILD_TIMEOUT_MS)
    screenshot(page, "datasets-images")

    page.goto(f"/data/{team}/digits/diff?from=1&to=3")
    counts = {key: int(page.locator(f"#file-summary [data-count={key}] strong").inner_text())
              for key in ("added", "removed", "changed", "relabeled")}
    assert counts == {"added": 3, "removed": 1, "changed": 0, "relabeled": 1}
    assert files[1] in page.locator("#files-relabeled").inner_text()
    screenshot(page, "datasets-diff-images")


def test_dropped_file_with_bad_label_column_shows_the_server_message(page, member, screenshot):
    team = member
    page.goto("/data")
    page.select_option("#upload select[name=team]", team)
    page.fill("#upload input[name=name]", "ragged")
    # A drop event as the browser sends it, carrying a DataTransfer with the file.
    page.evaluate("""([text, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, {type: 'text/csv'}));
        const zone = document.querySelector('#upload [data-dropzone]');
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", ["a,b,label\n1,2,0\n3,4,5,6\n", "ragged.csv"])
    page.wait_for_selector("#upload [data-selection]:has-text('ragged.csv')")
    page.click("#upload button[type=submit]")
    error = page.locator("#upload-error")
    error.wait_for(state="visible", timeout=BUILD_TIMEOUT_MS)
    assert "line 3" in error.inner_text()
    assert page.locator("#upload-progress").get_attribute("data-state") == "failed"

    page.fill("#upload input[name=name]", "cancer")
    page.fill("#upload input[name=label_column]", "diagnosis")
    csv = load_breast_cancer(as_frame=True).frame.to_csv(index=False)
    page.evaluate("""([text, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], name, {type: 'text/csv'}));
        document.querySelector('#upload [data-selection] button').click();
        document.querySelector('#upload [data-dropzone]').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [csv, "cancer.csv"])
    page.wait_for_selector("#upload [data-selection]:has-text('cancer.csv')")
    assert "ragged.csv" not in page.locator("#upload [data-selection]").inner_text()
    page.click("#upload button[type=submit]")
    page.wait_for_function("() => document.querySelector('#upload-error').innerText.includes('diagnosis')",
                           timeout=BUILD_TIMEOUT_MS)
    assert "mean radius" in error.inner_text()  # the message lists the available columns
    screenshot(page, "datasets-upload-error")
    page.goto("/data")
    assert "No datasets yet" in page.locator(f"table[data-team='{team}']").inner_text()
