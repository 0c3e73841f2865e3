"""Models end to end on the live stack: a training job logs and registers a model, gates pass and fail,
exports keep parity, a deployment serves it (canary, shadow, rollback), batch prediction, bad input.

Real job, real Celery worker for evaluations and exports, the real serving process; breast_cancer data.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from officina.sdk.errors import Conflict, InvalidRequest, NotFound, TooLarge
from checks import wait_until

POLICY = {"dataset": {"name": "cancer", "version": 1}, "metrics": {"accuracy": {"min": 0.9}},
          "min_class_recall": 0.85, "max_regression": 0.02, "latency_p95_ms": 200, "parity_tolerance": 1e-4,
          "auto_evaluate": True}


def _wait(predicate, timeout: float = 120.0, every: float = 0.5):
    return wait_until(predicate, timeout, every)


@pytest.fixture(scope="module")
def cancer():
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    return frame


@pytest.fixture(scope="module")
def world(live_stack, cancer, tmp_path_factory):
    """A team with the cancer data and a model trained and registered by a real job (v1)."""
    from officina import sdk

    sdk.connect(live_stack.url, live_stack.admin_token)
    team = live_stack.make_team()
    path = tmp_path_factory.mktemp("cancer") / "cancer.csv"
    cancer.to_csv(path, index=False)
    sdk.datasets.upload("cancer", path, team=team)
    job = sdk.submit(trainer="tabular", dataset="cancer", team=team,
                     params={"epochs": 25, "register_model": "cancer"})
    job.wait(timeout=240)
    assert job.data["state"] == "succeeded", "\n".join(list(job.logs())[-25:])
    assert any("registered model cancer v1" in line for line in job.logs())
    yield {"team": team, "job": job, "sdk": sdk}
    sdk.connect(live_stack.url, "")


def _local(version, tmp_path) -> torch.jit.ScriptModule:
    path = version.download(tmp_path / f"v{version.version}.pt")
    return torch.jit.load(str(path))


def test_log_register_gates_promote_export_deploy_and_batch(world, cancer, live_stack, tmp_path):
    sdk, team = world["sdk"], world["team"]
    features = [c for c in cancer.columns if c != "label"]

    # -- the job's model is version 1, with lineage and signature
    v1 = sdk.models.get("cancer", 1, team=team)
    assert v1.lineage["run_id"] == world["job"].run_id and v1.lineage["job_id"] == world["job"].id
    assert v1.lineage["datasets"] == [{"dataset": "cancer", "version": 1, "role": "train"}]
    assert v1.lineage["code"]["trainer"] == "tabular"
    assert v1.signature["inputs"]["shape"] == [-1, 30] and v1.signature["inputs"]["names"] == features
    assert v1.signature["task"] == "classification" and v1.signature["classes"] == [0, 1]

    # -- gates: v1 passes and becomes production
    sdk.models.set_policy("cancer", POLICY, team=team)
    evaluation = v1.evaluate()
    assert evaluation["state"] == "succeeded", evaluation
    results = evaluation["results"]
    assert results["metrics"]["accuracy"] >= 0.9 and len(results["per_class"]["recall"]) == 2
    assert results["latency_ms"]["p95"] > 0 and results["parity"]["max_abs_diff"] <= 1e-4
    assert evaluation["passed"], evaluation["gates"]
    assert {g["gate"] for g in evaluation["gates"]} == {"accuracy", "class recall", "no regression", "latency",
                                                         "export parity"}
    promoted = v1.promote("production")
    assert promoted["outcome"] == "promoted" and v1.aliases == ["production"]

    # -- a bad version (untrained) is evaluated on its own when logged, fails, and is blocked
    torch.manual_seed(3)
    untrained = torch.nn.Sequential(torch.nn.Linear(30, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    v2 = sdk.models.register("cancer", untrained, example_input=torch.zeros(2, 30), signature=v1.signature,
                             team=team)
    assert v2.version == 2
    auto = _wait(lambda: next((e for e in v2.refresh().evaluations if e["state"] in ("succeeded", "failed")), None))
    assert auto["trigger"] == "auto" and auto["state"] == "succeeded" and auto["passed"] is False
    with pytest.raises(Conflict) as blocked:
        v2.promote("production")
    failing = {g["gate"] for g in blocked.value.details["gates"] if not g["passed"]}
    assert {"accuracy", "no regression"} <= failing, blocked.value.details
    assert sdk.models.get("cancer", "production", team=team).version == 1
    # ... a team admin may override, with the reason recorded
    overridden = v2.promote("staging", override_reason="demo build for the UI team, not for users")
    assert overridden["outcome"] == "overridden"
    history = sdk.models.info("cancer", team=team)["model"]["promotions"]
    assert [p["outcome"] for p in history[:3]] == ["overridden", "blocked", "promoted"]
    assert history[0]["override_reason"].startswith("demo build")

    # -- exports: ONNX (parity checked in ONNX Runtime), TorchScript, int8; downloadable
    onnx_export = v1.export("onnx")
    assert onnx_export["state"] == "succeeded", onnx_export
    assert onnx_export["report"]["parity"]["max_abs_diff"] <= 1e-4 and onnx_export["report"]["size"] > 0
    int8 = v1.export("onnx_int8")
    assert int8["state"] == "succeeded", int8
    assert int8["report"]["size"] < onnx_export["report"]["size"] and int8["report"]["parity"]["agreement"] >= 0.9
    assert v1.export("torchscript")["state"] == "succeeded"
    import onnxruntime as ort

    onnx_path = v1.download(tmp_path, "onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = cancer[features].to_numpy(np.float32)[:50]
    reference = _local(v1, tmp_path)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], reference, atol=1e-4)

    # -- deploy v1 and predict (rows as lists or by feature name)
    name = f"cancer-{team}"
    deployment = sdk.deployments.create(name, [("cancer", 1, 100)], team=team, max_batch_size=16, max_wait_ms=2)
    answer = _wait(lambda: _try_predict(deployment, x[:5].tolist()), timeout=30)
    assert answer["model"] == {"name": "cancer", "version": 1}
    assert answer["predictions"] == [int(i) for i in reference[:5].argmax(1)]
    by_name = deployment.predict([dict(zip(features, map(float, x[0])))])
    assert by_name["predictions"] == answer["predictions"][:1]

    # -- canary: 80/20 between v1 and v3 (a retrained copy)
    v3 = sdk.models.register("cancer", str(tmp_path / "v1.pt"), signature=v1.signature, team=team)
    deployment.update(routes=[("cancer", 1, 80), ("cancer", v3.version, 20)])
    _wait(lambda: _try_predict(deployment, x[:1].tolist(), version=v3.version), timeout=30, every=0.02)
    seen = [deployment.predict(x[i % 50:i % 50 + 1].tolist())["model"]["version"] for i in range(200)]
    share = seen.count(v3.version) / len(seen)
    assert set(seen) == {1, v3.version} and 0.08 <= share <= 0.35, share

    # -- shadow: v2 gets copies, logged with its answers, never returned
    deployment.update(routes=[("cancer", 1, 100)], shadow=("cancer", 2))
    _wait(lambda: deployment.refresh().data["shadow"] is not None)
    time.sleep(1.5)  # the serving process reloads within serving_reload_s
    for i in range(10):
        assert deployment.predict(x[i:i + 1].tolist())["model"]["version"] == 1
    shadowed = _wait(lambda: [p for p in deployment.predictions(limit=100, shadow=True) if p["version"] == 2])
    assert shadowed[0]["outputs"] and shadowed[0]["inputs"] and shadowed[0]["latency_ms"] >= 0
    live = deployment.predictions(limit=5, shadow=False)
    assert live and all(p["version"] == 1 for p in live)

    # -- rollback to revision 1 (v1 alone, no shadow): a new revision
    assert deployment.revision == 3
    deployment.rollback(1)
    assert deployment.revision == 4 and deployment.routes == [{"model": "cancer", "version": 1,
                                                               "version_id": deployment.routes[0]["version_id"],
                                                               "weight": 100}]
    assert deployment.data["shadow"] is None

    # -- batch prediction: a new dataset version with the predictions
    batch = v1.predict_batch("cancer", 1, output="cancer-scored")
    assert batch["state"] == "succeeded", batch["reason"]
    assert batch["rows"] == len(cancer) and batch["output"]["version"] == 1
    scored = sdk.datasets.get("cancer-scored", 1, team=team).to_pandas()
    assert "prediction" in scored.columns and len(scored) == len(cancer)
    full = _local(v1, tmp_path)(torch.from_numpy(cancer[features].to_numpy(np.float32))).detach().numpy()
    assert (scored["prediction"].to_numpy() == full.argmax(1)).mean() == 1.0


def _try_predict(deployment, rows, version=None):
    try:
        answer = deployment.predict(rows)
    except NotFound:
        return None  # not loaded yet
    return answer if version is None or answer["model"]["version"] == version else None


def test_bad_input_is_refused_with_reasons(world, live_stack, tmp_path):
    sdk, team = world["sdk"], world["team"]
    v1 = sdk.models.get("cancer", 1, team=team)
    name = f"bad-{team}"
    deployment = sdk.deployments.create(name, [("cancer", 1, 100)], team=team)
    _wait(lambda: _try_predict(deployment, [[0.0] * 30]), timeout=30)

    with pytest.raises(InvalidRequest) as wrong_shape:
        deployment.predict([[1.0, 2.0]])
    assert "rows[0]" in str(wrong_shape.value) and "30" in str(wrong_shape.value)
    with pytest.raises(InvalidRequest) as wrong_type:
        deployment.predict([["x"] * 30])
    assert "rows[0]" in str(wrong_type.value)
    with pytest.raises(TooLarge):
        deployment.predict([[0.0] * 30] * (live_stack.settings.serving_max_rows + 1))
    with pytest.raises(NotFound):
        sdk.deployments.get("no-such-deployment")
    with pytest.raises(InvalidRequest) as weights:
        deployment.update(routes=[("cancer", 1, 60), ("cancer", 2, 30)])
    assert "add up to 100" in str(weights.value)

    # other teams: can't see, promote or deploy this team's models
    other = live_stack.make_team()
    _, _, token = live_stack.make_user(team=other, role="admin")
    from officina.sdk.client import Client

    outsider = Client(live_stack.url, token)
    with pytest.raises(NotFound):
        outsider.post(f"/teams/{team}/models/cancer/versions/1/promote", {"alias": "production"})
    with pytest.raises(NotFound) as cross:
        outsider.post(f"/teams/{other}/deployments", {"name": f"x-{other}",
                                                      "routes": [{"model": "cancer", "version": 1, "weight": 100}]})
    assert "not found in team" in str(cross.value)
    with pytest.raises(NotFound):
        outsider.get(f"/deployments/{name}")

    # a malicious pickle is refused unread: nothing runs
    count = len(sdk.models.info("cancer", team=team)["versions"])
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InvalidRequest) as refused:
        sdk.models.register("cancer", str(evil), signature=v1.signature, team=team)
    assert "pickle" in str(refused.value)
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "evil": Evil()}, buf)
    evil.write_bytes(buf.getvalue())
    with pytest.raises(InvalidRequest) as refused_zip:
        sdk.models.register("cancer", str(evil), signature=v1.signature, team=team)
    assert "torch.save" in str(refused_zip.value)
    assert not marker.exists()
    assert len(sdk.models.info("cancer", team=team)["versions"]) == count  # nothing registered

    # gate policy and promotion input
    with pytest.raises(InvalidRequest):
        sdk.models.set_policy("cancer", {"metrics": {"accuracy": {"min": "high"}}}, team=team)
    with pytest.raises(InvalidRequest):
        sdk.models.set_policy("cancer", {"dataset": {"name": "cancer"}}, team=team)  # no pinned version
    with pytest.raises(InvalidRequest):
        v1.promote("Not An Alias")


def test_cli_registers_promotes_deploys_and_predicts(world, live_stack, tmp_path):
    from click.testing import CliRunner

    from officina.infra.cli import main

    sdk, team = world["sdk"], world["team"]
    v1 = sdk.models.get("cancer", 1, team=team)
    path = v1.download(tmp_path / "cancer.pt")
    runner = CliRunner()
    signature = json.dumps(v1.signature)
    registered = runner.invoke(main, ["models", "register", "cli-model", str(path), "--signature", signature,
                                      "--team", team])
    assert registered.exit_code == 0 and "registered cli-model v1" in registered.output, registered.output
    listed = runner.invoke(main, ["models", "list", "--team", team])
    assert listed.exit_code == 0 and "cli-model" in listed.output and "production=v1" in listed.output
    promoted = runner.invoke(main, ["models", "promote", "cli-model", "production", "--version", "1", "--team", team])
    assert promoted.exit_code == 0 and "production -> v1 (promoted)" in promoted.output, promoted.output
    name = f"cli-{team}"
    created = runner.invoke(main, ["deployments", "create", name, "--route", "cli-model:1=100", "--team", team])
    assert created.exit_code == 0 and "/v1/deployments/" in created.output, created.output
    row = "[[" + ",".join(["1.0"] * 30) + "]]"
    answer = _wait(lambda: (lambda r: r if r.exit_code == 0 else None)(runner.invoke(main, ["predict", name, row])),
                   timeout=30)
    assert '"model": {"name": "cli-model", "version": 1}' in answer.output
    bad = runner.invoke(main, ["predict", name, "[[1.0]]"])
    assert bad.exit_code == 1 and "rows[0]" in bad.output
    bad_route = runner.invoke(main, ["deployments", "create", f"x{name}", "--route", "cli-model:1", "--team", team])
    assert bad_route.exit_code == 2 and "MODEL:VERSION=WEIGHT" in bad_route.output
    scored = runner.invoke(main, ["models", "batch", "cli-model", "cancer", "--version", "1", "--dataset-version", "1",
                                  "--output", "cli-scored", "--team", team])
    assert scored.exit_code == 0 and "-> cli-scored v1" in scored.output, scored.output
    deleted = runner.invoke(main, ["deployments", "delete", name])
    assert deleted.exit_code == 0 and name not in runner.invoke(main, ["deployments", "list", "--team", team]).output
