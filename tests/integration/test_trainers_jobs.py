"""Built-in trainers as real jobs: ``sdk.submit(trainer=…, dataset=…)`` on scikit-learn data.

Each trainer runs in a subprocess of the live worker, reads its dataset through the SDK, logs
metrics per epoch, checkpoints, and logs its final model to the run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


def _finished(sdk, job) -> dict:
    job.wait(timeout=240)
    assert job.data["state"] == "succeeded", (job.data, list(job.logs()))
    run = sdk.tracking.get_run(job.run_id)
    assert run["status"] == "finished"
    return run


def test_image_trainer_reaches_97_percent_on_digits(sdk_client, team, tmp_path):
    sdk = sdk_client
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = tmp_path / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i:04d}.png")
    sdk.datasets.upload("digits", tmp_path / "digits", team=team)
    job = sdk.submit(trainer="image", dataset="digits", team=team, project="trainers",
                     params={"epochs": 12, "checkpoint_every": 4})
    run = _finished(sdk, job)
    metrics = run["metrics"]
    assert metrics["test_acc"] >= 0.97, metrics
    history = sdk.tracking.history(job.run_id, "val_acc")
    assert len(history) == 12  # one point per epoch
    artifacts = sdk.client().get(f"/runs/{job.run_id}/artifacts")["artifacts"]
    model = next(a for a in artifacts if a["kind"] == "model")
    assert model["meta"]["framework"] == "torch"
    assert len(sdk.checkpoint.list(run_id=job.run_id)) >= 3
    lineage = sdk.client().get(f"/runs/{job.run_id}/lineage")["datasets"]
    assert lineage == [{"dataset": "digits", "version": 1, "role": "train"}]


def test_tabular_and_text_trainers(sdk_client, team, tmp_path):
    sdk = sdk_client
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    sdk.datasets.upload("cancer", tmp_path / "cancer.csv", team=team)
    rng = np.random.default_rng(0)
    topics = {"sport": "match goal team player score coach league season win ball".split(),
              "science": "atom cell energy theory experiment data molecule physics lab result".split()}
    with open(tmp_path / "texts.jsonl", "w") as fh:
        for i in range(600):
            label = "sport" if i % 2 else "science"
            words = list(rng.choice(topics[label], 8)) + list(rng.choice(topics["sport" if label == "science"
                                                                                else "science"], 2))
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    sdk.datasets.upload("texts", tmp_path / "texts.jsonl", team=team)
    tabular = sdk.submit(trainer="tabular", dataset="cancer", team=team, params={"epochs": 30})
    text = sdk.submit(trainer="text", dataset="texts", team=team, params={"epochs": 8})
    assert _finished(sdk, tabular)["metrics"]["test_acc"] >= 0.93
    assert _finished(sdk, text)["metrics"]["test_acc"] >= 0.9


def test_trainer_with_bad_params_fails_with_the_reason(sdk_client, team, tmp_path):
    sdk = sdk_client
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    sdk.datasets.upload("cancer", tmp_path / "cancer.csv", team=team)
    job = sdk.submit(trainer="tabular", dataset="cancer", team=team, params={"epochs": -3}, max_retries=0)
    job.wait(timeout=120)
    assert job.data["state"] == "failed" and job.data["exit_code"] == 2
    assert any("epochs" in line for line in job.logs())
    assert sdk.tracking.get_run(job.run_id)["status"] == "failed"
