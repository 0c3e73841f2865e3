"""The Models and Deployments console: a model trained by a real job shows its lineage; the gate policy is
edited as JSON (bad JSON refused clearly); Evaluate runs on the worker and the page shows results and gates;
v1 is promoted to production; an untrained v2 is blocked with its failing gate; an ONNX export is measured
and downloadable; a deployment is created, tried (the prediction server answers with the model version),
updated with a canary, rolled back and deleted."""
from __future__ import annotations

import io
import re

import pytest
from browser_helpers import login_as_member
from sklearn.datasets import load_breast_cancer

EVAL_TIMEOUT_MS = 180_000


@pytest.fixture
def browser_context_args(live_stack) -> dict:
    return {"base_url": live_stack.url, "viewport": {"width": 1360, "height": 900}, "accept_downloads": True}


@pytest.fixture
def member(page, live_stack):
    """A new team, and the page logged in as a member of it; returns (team, api token)."""
    return login_as_member(page, live_stack)


@pytest.fixture
def cancer():
    return load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})


def _train_v1(live_stack, token: str, team: str, cancer, tmp_path) -> None:
    """Upload the data and let a real tabular job train and register ``cancer`` v1 (lineage: run, data)."""
    from officina import sdk

    sdk.connect(live_stack.url, token)
    try:
        path = tmp_path / "cancer.csv"
        cancer.to_csv(path, index=False)
        sdk.datasets.upload("cancer", path, team=team)
        job = sdk.submit(trainer="tabular", dataset="cancer", team=team,
                         params={"epochs": 15, "register_model": "cancer"})
        job.wait(timeout=240)
        assert job.data["state"] == "succeeded", list(job.logs())
    finally:
        sdk.connect(live_stack.url, "")


def _register_untrained(live_stack, token: str, team: str, cancer) -> None:
    """``cancer`` v2: an untrained MLP (TorchScript), which fails the accuracy gate."""
    import torch

    torch.manual_seed(0)
    features = [c for c in cancer.columns if c != "label"]
    net = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    traced = torch.jit.trace(net, torch.zeros(1, 30))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    signature = {"inputs": {"dtype": "float32", "shape": [-1, 30], "names": features},
                 "outputs": {"dtype": "float32", "shape": [-1, 2]}, "task": "classification", "classes": [0, 1]}
    principal = live_stack.services.auth.authenticate_token(token)
    live_stack.services.models.register_file(principal, team, "cancer", buffer.getvalue(), signature=signature,
                                             description="untrained", create=False)


def _save_policy(page, text: str) -> None:
    page.fill("#policy-text", text)
    page.click("#save-policy")


def _evaluate(page, screenshot, name: str) -> None:
    page.click("#evaluate")
    assert "queued" in page.locator(".flash.ok").inner_text()
    page.wait_for_selector("#eval-results", timeout=EVAL_TIMEOUT_MS)  # the page reloads when it ends
    screenshot(page, name)


def test_models_gates_promotion_exports_and_deployments(page, live_stack, member, cancer, tmp_path, screenshot):
    team, token = member
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    _train_v1(live_stack, token, team, cancer, tmp_path)

    # -- the models list, then the model page with v1's lineage
    page.goto("/models")
    assert "active" in page.locator("nav a:has-text('Models')").get_attribute("class")
    row = page.locator("#models tr[data-model='cancer']")
    assert "v1" in row.inner_text() and "none" in row.inner_text()
    screenshot(page, "models-list")
    row.locator("a.model-link").click()
    page.wait_for_url(re.compile(r".*/models/[^/]+/cancer$"))
    v1 = page.locator("#versions tr[data-version='1']")
    assert "torchscript" in v1.inner_text()
    assert v1.locator("a.run-link").count() == 1
    assert "train: cancer v1" in v1.locator(".lineage-cell").inner_text()
    assert "trainer tabular" in v1.locator(".lineage-cell").inner_text()

    # -- the gate policy: bad JSON and unknown keys are refused with the reason, and the text stays
    _save_policy(page, '{"dataset": {"name": "cancer", "version": 1},')
    assert "gate policy is not valid JSON" in page.locator(".flash.error").inner_text()
    assert page.input_value("#policy-text") == '{"dataset": {"name": "cancer", "version": 1},'
    _save_policy(page, '{"dataset": {"name": "cancer", "version": 1}, "accuracy_min": 0.9}')
    assert "unknown gate policy key(s): accuracy_min" in page.locator(".flash.error").inner_text()
    _save_policy(page, '{"dataset": {"name": "cancer", "version": 1}, "metrics": {"accuracy": {"min": 0.9}},'
                       ' "min_class_recall": 0.8, "max_regression": 0.02, "latency_p95_ms": 500,'
                       ' "parity_tolerance": 0.001}')
    assert "Gate policy saved." in page.locator(".flash.ok").inner_text()
    assert '"min_class_recall": 0.8' in page.input_value("#policy-text")

    # -- v1: not evaluated yet, so blocked; Evaluate; results and gates; promote to production
    assert page.locator("#verdict").get_attribute("data-passed") == "false"
    assert "no evaluation on the pinned data yet" in page.locator("#gates-now").inner_text()
    _evaluate(page, screenshot, "model-v1-evaluated")
    assert page.locator("#eval-metrics tr[data-metric='accuracy']").count() == 1
    assert page.locator("#eval-recall tr").count() == 2
    assert "p95" in page.locator("#eval-latency").inner_text()
    assert "differs by at most" in page.locator("#eval-parity").inner_text()
    assert page.locator("#verdict").get_attribute("data-passed") == "true", page.locator("#promote").inner_text()
    gates = page.locator("#gates-now li.gate")
    assert gates.count() == 5 and page.locator("#gates-now li.gate.fail").count() == 0
    page.click("#promote-button")
    assert "cancer v1 is now 'production'" in page.locator(".flash.ok").inner_text()
    assert page.locator("h1 [data-alias='production']").inner_text() == "production → v1"
    assert "already holds" in page.locator("#verdict").inner_text()
    assert page.locator("#promotion-table tr[data-outcome='promoted']").count() == 1

    # -- an ONNX export: measured (size, latency, parity) and downloadable
    page.click("#export-form button[data-export='onnx']")
    assert "ONNX export of v1 queued" in page.locator(".flash.ok").inner_text()
    page.wait_for_selector("#export-table tr[data-format='onnx'][data-state='succeeded']", timeout=EVAL_TIMEOUT_MS)
    onnx_row = page.locator("#export-table tr[data-format='onnx']").inner_text()
    assert "ms" in onnx_row and "max diff" in onnx_row and ("KB" in onnx_row or " B" in onnx_row)
    with page.expect_download() as download:
        page.click("#export-table tr[data-format='onnx'] a.export-download")
    assert download.value.suggested_filename == "cancer-v1.onnx"
    screenshot(page, "model-v1-promoted-exported")

    # -- batch prediction of the whole cancer data: a new dataset version, linked from the page
    page.select_option("#batch-form select[name=dataset]", "cancer")
    page.fill("#batch-form input[name=output]", "cancer-scored")
    page.click("#batch-form button[type=submit]")
    assert "the result will be cancer-scored" in page.locator(".flash.ok").inner_text()
    page.wait_for_selector("#batch-table tr[data-state='succeeded']", timeout=EVAL_TIMEOUT_MS)
    batch_row = page.locator("#batch-table tr[data-state='succeeded']").inner_text()
    assert "cancer-scored v1" in batch_row and str(len(cancer)) in batch_row
    screenshot(page, "model-v1-batch")

    # -- v2 (untrained) is evaluated and blocked, with the failing gate named
    _register_untrained(live_stack, token, team, cancer)
    page.goto(f"/models/{team}/cancer?version=2")
    _evaluate(page, screenshot, "model-v2-evaluated")
    assert page.locator("#verdict").get_attribute("data-passed") == "false"
    assert page.locator("#gates-now li.gate.fail").count() >= 1
    assert page.locator("#override-reason").count() == 0  # a member may not override
    page.click("#promote-button")
    blocked = page.locator(".flash.error").inner_text()
    assert "Not promoted" in blocked and "may not become 'production'" in blocked, blocked
    assert page.locator("#promotion-table tr[data-outcome='blocked']").count() == 1
    assert page.locator("h1 [data-alias='production']").inner_text() == "production → v1"
    screenshot(page, "model-v2-blocked")

    # -- a deployment of production, tried from the console
    page.click("nav a:has-text('Deployments')")
    assert "No deployments yet" in page.locator("#deployments").inner_text()
    page.fill("#new-deployment [name=name]", f"cancer-{team}"[:60])
    page.select_option("#new-deployment .route-row[data-route='0'] select[name=route_model]", "cancer")
    page.fill("#new-deployment .route-row[data-route='0'] input[name=route_version]", "production")
    page.fill("#new-deployment .route-row[data-route='1'] input[name=route_weight]", "")
    screenshot(page, "deployments-new")
    page.click("#create-deployment")
    page.wait_for_url(re.compile(r".*/deployments/cancer-[^/]+$"))
    assert "Created deployment" in page.locator(".flash.ok").inner_text()
    assert "cancer v1" in page.locator("#routes").inner_text() and "100%" in page.locator("#routes").inner_text()
    assert "/predict" in page.locator("#endpoint").inner_text() and "curl" in page.locator("#curl").inner_text()
    row = [float(v) for v in cancer.drop(columns=["label"]).iloc[0]]
    page.fill("#try-rows", '{"rows": [' + str(row) + "]}")
    page.click("#try-button")
    result = page.locator("#try-result")
    assert result.get_attribute("data-status") == "200", result.inner_text()
    assert page.locator("#try-version").inner_text() == "cancer v1"
    assert '"predictions"' in page.locator("#try-json").inner_text()
    screenshot(page, "deployment-tried")

    # -- a canary of v2, then roll back to revision 1, then delete
    page.fill("#update-form .route-row[data-route='0'] input[name=route_version]", "1")
    page.fill("#update-form .route-row[data-route='0'] input[name=route_weight]", "90")
    page.select_option("#update-form .route-row[data-route='1'] select[name=route_model]", "cancer")
    page.fill("#update-form .route-row[data-route='1'] input[name=route_version]", "2")
    page.fill("#update-form .route-row[data-route='1'] input[name=route_weight]", "10")
    page.click("#update-button")
    assert "now revision 2" in page.locator(".flash.ok").inner_text()
    routes = page.locator("#routes").inner_text()
    assert "cancer v1" in routes and "90%" in routes and "cancer v2" in routes and "10%" in routes
    page.locator("#revision-table tr[data-revision='1'] button.rollback").click()
    assert "now revision 3" in page.locator(".flash.ok").inner_text()
    assert "cancer v2" not in page.locator("#routes").inner_text()
    for _ in range(20):  # the prediction log is written in the background
        page.reload()
        if "cancer v1" in page.locator("#prediction-table tbody tr").first.inner_text():
            break
        page.wait_for_timeout(500)
    assert "cancer v1" in page.locator("#prediction-table tbody tr").first.inner_text()
    screenshot(page, "deployment-rolled-back")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-button")
    page.wait_for_url(re.compile(r".*/deployments\?team=.*"))
    assert "Deleted deployment" in page.locator(".flash.ok").inner_text()
    assert "No deployments yet" in page.locator("#deployments").inner_text()
    assert script_errors == []


def test_bad_input_is_flashed_not_a_500(page, live_stack, member):
    team, _ = member
    page.goto("/models")
    page.fill("#register-model [name=name]", "empty")
    page.set_input_files("#register-model [name=file]", files=[{"name": "x.pt", "mimeType": "application/octet-stream",
                                                                "buffer": b"\x80\x04K\x01."}])
    page.click("#register-model button[type=submit]")
    assert "pickle" in page.locator(".flash.error").inner_text()
    page.goto("/deployments")
    assert "has no models yet" in page.locator("#new-deployment-card").inner_text()
    page.goto("/deployments/nope")
    assert "deployment 'nope' not found" in page.content()
    page.goto(f"/models/{team}/nope")
    assert "model 'nope' not found" in page.content()
