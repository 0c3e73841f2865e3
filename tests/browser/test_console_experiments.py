"""The Experiments console: the runs table sorts and picks columns, a run's page charts its metrics (live while
it trains), and the comparison overlays runs, diffs their params and draws parallel coordinates."""
from __future__ import annotations

import io
import math
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_helpers import login_as_member
import requests
from sklearn.datasets import load_breast_cancer

STEPS = 200
RUNS = [  # name, params, how fast loss falls, where acc ends
    ("slow-lr", {"lr": 0.001, "batch_size": 32, "optimizer": "adam", "model": {"hidden": 64}}, 120.0, 0.81),
    ("mid-lr", {"lr": 0.01, "batch_size": 32, "optimizer": "adam", "model": {"hidden": 64}}, 60.0, 0.93),
    ("fast-lr", {"lr": 0.1, "batch_size": 32, "optimizer": "sgd", "model": {"hidden": 128}}, 30.0, 0.87),
]


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def member(page, live_stack):
    """A new team, and the page logged in as a member of it; returns (team, api token)."""
    return login_as_member(page, live_stack)


class Api:
    def __init__(self, url: str, token: str):
        self.url, self.session = url + "/api/v1", requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, self.url + path, timeout=60, **kwargs)
        assert response.ok, response.text
        return response.json() if response.content else {}


def _logged_runs(api: Api, team: str) -> dict[str, str]:
    """Three finished runs with 200 points each of loss and acc, differing params; returns name -> id."""
    ids = {}
    for name, params, scale, final_acc in RUNS:
        run = api.call("POST", f"/teams/{team}/runs", json={"project": "sweep", "name": name, "params": params,
                                                             "git": {"commit": "0123456789abcdef", "dirty": False}})
        run_id = ids[name] = run["run"]["id"]
        points = []
        for step in range(STEPS):
            points.append({"key": "loss", "step": step, "value": 2.0 * math.exp(-step / scale) + 0.05})
            points.append({"key": "acc", "step": step, "value": final_acc * (1 - math.exp(-step / 40))})
        api.call("POST", f"/runs/{run_id}/metrics", json={"metrics": points})
        if name == "mid-lr":
            api.call("POST", f"/runs/{run_id}/metrics", json={"metrics": [
                {"key": "system/cpu_percent", "step": s, "value": 40 + 10 * math.sin(s)} for s in range(20)]})
            api.call("PUT", f"/runs/{run_id}/artifacts/reports/summary.json", data=b'{"ok": true}')
            api.call("PUT", f"/runs/{run_id}/checkpoints/100", data=b"checkpoint bytes")
        api.call("PATCH", f"/runs/{run_id}", json={"status": "finished"})
    return ids


def _query(name: str, value: str):
    """A URL matcher: the query string has ``name=value`` (however it is escaped)."""
    return lambda url: value in parse_qs(urlsplit(url).query).get(name, [])


def _names(page) -> list[str]:
    return page.locator("#runs a.run-link").all_inner_texts()


def test_runs_table_run_page_and_compare(page, live_stack, member, screenshot):
    team, token = member
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    api = Api(live_stack.url, token)
    ids = _logged_runs(api, team)
    api.call("POST", f"/teams/{team}/runs", json={"project": "other", "name": "unrelated"})

    page.goto("/experiments")
    assert page.locator("nav a.active").inner_text().strip() == "Experiments"
    assert sorted(_names(page)) == ["fast-lr", "mid-lr", "slow-lr", "unrelated"]
    assert _names(page)[0] == "unrelated"  # newest first
    # by default: the params that differ, and the metrics
    columns = [th.get_attribute("data-col") for th in page.locator("#runs thead th[data-col]").all()]
    assert columns == ["p:lr", "p:model.hidden", "p:optimizer", "m:acc", "m:loss"]  # batch_size is the same

    page.select_option("select[name=project]", "sweep")
    page.wait_for_url(re.compile(r".*project=sweep.*"))
    assert sorted(_names(page)) == ["fast-lr", "mid-lr", "slow-lr"]
    page.select_option("select[name=sort]", "metric:acc:desc")
    page.wait_for_url(_query("sort", "metric:acc:desc"))
    assert _names(page) == ["mid-lr", "fast-lr", "slow-lr"]  # last acc 0.93 > 0.87 > 0.81
    page.click("#runs thead th[data-col='m:acc'] a")  # the header flips the order
    page.wait_for_url(_query("sort", "metric:acc:asc"))
    assert _names(page) == ["slow-lr", "fast-lr", "mid-lr"]
    page.select_option("select[name=sort]", "metric:loss:asc")
    page.wait_for_url(_query("sort", "metric:loss:asc"))
    assert _names(page) == ["fast-lr", "mid-lr", "slow-lr"]  # the fastest decay has the lowest last loss

    # choose columns: add the optimizer param and drop the loss metric; the choice lives in the query string
    page.click("#column-picker summary")
    page.check("#column-picker input[value='p:optimizer']")
    page.wait_for_url(_query("col", "p:optimizer"))
    assert page.locator("#column-picker").get_attribute("open") is not None  # stays open while picking
    page.uncheck("#column-picker input[value='m:loss']")
    page.wait_for_function("() => !document.querySelector(\"#runs th[data-col='m:loss']\")")
    assert page.locator("#runs th[data-col='p:optimizer']").count() == 1
    optimizers = page.locator("#runs td[data-col='p:optimizer']").all_inner_texts()
    assert optimizers == ["sgd", "adam", "adam"]
    assert "fast-lr" in _names(page)[0] and "sort=metric" in page.url and "project=sweep" in page.url
    screenshot(page, "experiments-columns")
    page.locator("#column-picker summary").click()
    screenshot(page, "experiments-runs")
    page.reload()  # the query string alone restores the view
    assert page.locator("#runs th[data-col='p:optimizer']").count() == 1
    assert page.locator("#runs th[data-col='m:loss']").count() == 0

    page.fill("input[name=q]", "mid")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r".*q=mid.*"))
    assert _names(page) == ["mid-lr"]

    # a run's page: header, params, a chart per metric, system metrics apart, artifacts and checkpoints
    page.click("#runs a.run-link:has-text('mid-lr')")
    page.wait_for_url(f"**/experiments/runs/{ids['mid-lr']}")
    page.wait_for_selector("#charts-main .chart[data-key='acc'] canvas")
    page.wait_for_selector("#charts-main .chart[data-key='loss'] canvas")
    assert page.locator("#charts-main .chart").count() == 2
    for key in ("acc", "loss"):
        chart = page.locator(f"#charts-main .chart[data-key='{key}']")
        assert chart.get_attribute("data-series") == "1"
        assert chart.get_attribute("data-points") == str(STEPS)
        assert chart.get_attribute("data-x-max") == str(STEPS - 1)
        assert chart.locator(".u-legend .u-series").count() == 2  # the step, and the one series
    system = page.locator("#charts-system .chart[data-key='system/cpu_percent']")
    system.locator("canvas").wait_for()
    assert page.locator("#system-section").is_visible()
    assert page.locator("#run-status").inner_text() == "finished"
    assert page.locator("#run-git").inner_text() == "0123456789ab"
    params = page.locator("#params").inner_text()
    assert "optimizer\tadam" in params and "model.hidden\t64" in params and "lr\t0.01" in params
    summary = page.locator("#metric-summary tr[data-key='acc']").inner_text().split("\t")
    assert summary == ["acc", "0.9236", "0", "0.9236", "199"]  # last, min, max, step
    link = page.locator("#artifacts a:has-text('reports/summary.json')")
    assert link.get_attribute("href") == f"/api/v1/runs/{ids['mid-lr']}/artifacts/reports/summary.json"
    assert page.request.get(link.get_attribute("href")).body() == b'{"ok": true}'
    assert page.locator("#checkpoints").inner_text().count("100") >= 1
    screenshot(page, "experiments-run")

    # compare the three: one series per run, the params diff, parallel coordinates
    page.goto("/experiments?team=" + team + "&project=sweep")
    button = page.locator("#compare-button")
    assert button.is_disabled()
    for name in ("slow-lr", "mid-lr", "fast-lr"):
        page.check(f"#runs tr[data-run='{ids[name]}'] input[name=run]")
    assert button.is_enabled()
    button.click()
    page.wait_for_url(re.compile(r".*/experiments/compare\?runs=[0-9a-f-]+,[0-9a-f-]+,[0-9a-f-]+$"))
    for key in ("acc", "loss"):
        chart = page.locator(f"#charts-main .chart[data-key='{key}']")
        chart.locator("canvas").wait_for()
        assert chart.get_attribute("data-series") == "3"
        legend = chart.locator(".u-legend .u-series")
        assert legend.count() == 4
        assert sorted(legend.all_inner_texts()[1:])[0].startswith("fast-lr")
    diff = page.locator("#params-diff")
    assert diff.locator("tr.differs").count() == 3  # lr, model.hidden, optimizer
    assert diff.locator("tr[data-param='batch_size']").get_attribute("class") == "same"
    assert "0.001" in diff.locator("tr[data-param='lr']").inner_text()
    page.check("#only-differing")
    assert not diff.locator("tr[data-param='batch_size']").is_visible()
    lines = page.locator("#parallel svg polyline.run-line")
    assert lines.count() == 3
    axes = [g.get_attribute("data-key") for g in page.locator("#parallel svg g.axis").all()]
    assert axes == ["lr", "model.hidden", "optimizer", "acc", "loss"]
    screenshot(page, "experiments-compare")
    assert script_errors == []


def test_compare_needs_two_runs_and_shows_errors(page, live_stack, member):
    team, token = member
    api = Api(live_stack.url, token)
    run_id = api.call("POST", f"/teams/{team}/runs", json={"project": "p", "name": "alone"})["run"]["id"]
    page.goto(f"/experiments/compare?runs={run_id}")
    assert "between 2 and 10 runs" in page.locator("#exp-error").inner_text()
    page.goto(f"/experiments/compare?runs={run_id},00000000-0000-0000-0000-000000000000")
    assert "not found" in page.locator("#exp-error").inner_text()
    page.goto("/experiments?sort=metric:loss:sideways")
    assert "sort must look like" in page.locator("#exp-error").inner_text()
    # an API error while the page fetches its data shows in the page
    page.route("**/api/v1/runs/*/metrics", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body='{"error": {"code": "unavailable", "message": "metrics are resting", "details": {}}}'))
    page.goto(f"/experiments/runs/{run_id}")
    page.wait_for_selector("#exp-error:has-text('metrics are resting')")


def _upload_cancer(api: Api, team: str) -> None:
    csv = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(index=False)
    api.call("POST", f"/teams/{team}/datasets/cancer/versions", data={"label_column": "label"},
             files={"file": ("cancer.csv", io.BytesIO(csv.encode()))})


def test_live_run_page_fills_in_while_a_job_trains(page, live_stack, member, screenshot):
    team, token = member
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    api = Api(live_stack.url, token)
    _upload_cancer(api, team)
    page.goto("/jobs")
    page.select_option("select[name=trainer]", "tabular")
    page.select_option("#job-dataset", "cancer")
    page.fill("input[name=project]", "live")
    page.fill("input[name=name]", "cancer-mlp")
    page.fill("textarea[name=params]", '{"epochs": 150, "batch_size": 8, "checkpoint_every": 25, "lr": 0.003}')
    page.click("#submit-job button[type=submit]")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]+$"))
    run_link = page.locator("a[href^='/experiments/runs/']")
    deadline = time.monotonic() + 90
    while run_link.count() == 0:  # the run exists once the worker starts the job
        assert time.monotonic() < deadline, page.locator("#job-log").inner_text()
        time.sleep(1)
        page.reload()
    run_link.click()
    page.wait_for_url(re.compile(r".*/experiments/runs/[0-9a-f-]+$"))
    page.wait_for_function(
        "() => { const c = document.querySelector(\"#charts-main .chart[data-key='val_acc']\");"
        " return c && Number(c.dataset.points) >= 3 && c.querySelector('canvas'); }", timeout=90_000)
    first = int(page.locator(".chart[data-key='val_acc']").get_attribute("data-points"))
    status = page.locator("#run-status").inner_text()
    screenshot(page, "experiments-run-live")
    if status == "running":  # the page refreshes itself while the run trains
        page.wait_for_function(
            f"() => Number(document.querySelector(\".chart[data-key='val_acc']\").dataset.points) > {first}",
            timeout=60_000)
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'finished'",
                           timeout=120_000)
    page.wait_for_function(
        "() => Number(document.querySelector(\".chart[data-key='val_acc']\").dataset.points) === 150",
        timeout=10_000)
    # the x axis follows the data as it grows (not only the point count)
    assert page.locator(".chart[data-key='val_acc']").get_attribute("data-x-max") == "150"
    # the trainer logs its full params once it starts; the page picks them up
    page.wait_for_function("() => document.getElementById('params').innerText.includes('weight_decay')")
    assert "batch_size\t8" in page.locator("#params").inner_text()
    assert page.locator("#lineage").inner_text().startswith("cancer v1")
    page.wait_for_selector("#artifacts a:has-text('model')", timeout=15_000)
    page.wait_for_function("() => document.querySelectorAll('#checkpoints tbody tr').length === 6")  # every 25 epochs
    assert page.locator("#run-log").get_attribute("href").endswith("#job-log")
    screenshot(page, "experiments-run-finished")
    assert script_errors == []
