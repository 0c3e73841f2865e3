"""The built-in trainers on scikit-learn's data, with an in-memory tracker instead of a server."""
from __future__ import annotations

import io
import json
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

from officina.workers.trainers import image, job, tabular, text
from officina.workers.trainers.common import MemoryTracker, TrainerError, make_split, resolve_params
from officina.workers.trainers.job import JobEnv

TOPICS = {
    "sport": "match goal team coach league season striker keeper referee score stadium tournament penalty defender "
             "midfield champion trophy fans pitch tackle transfer final victory draw".split(),
    "food": "recipe oven flour butter garlic simmer roast sauce pepper onion dough bake spice kitchen salad grill "
            "dessert broth vinegar knife taste sugar boil slice".split(),
    "tech": "server kernel compiler database network cache thread python deploy latency cluster query memory bug "
            "release patch laptop browser protocol encryption router storage api commit".split(),
}
FILLER = ("the a of and to in is it that was for on are with as this be at by from or have an they which one you "
          "were her all she there would their we him been has when who will more no if out so said what up its "
          "about into than them can only other new some could time these two may then do first any my now such "
          "like our over man me even most made after also did many before must through back years where much your "
          "way well down should because each just those people how too little state good very make world still "
          "own see men work long get here between both life being under never day same another know while last "
          "might us great old year off come since against go came right used take three").split()


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return (bunch.images * 255 / 16).round().astype(np.uint8), bunch.target  # as the 8×8 PNGs hold them


def topic_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts about one of three topics: 35% topic words, 8% another topic's, the rest common words;
    2% of the labels are random. Naive Bayes scores about 0.95 on it."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for _ in range(n):
        k = int(rng.integers(3))
        words = []
        for _ in range(int(rng.integers(8, 25))):
            r = rng.random()
            pool = (TOPICS[names[k]] if r < 0.35 else TOPICS[names[(k + 1 + int(rng.integers(2))) % 3]]
                    if r < 0.43 else FILLER)
            words.append(str(rng.choice(pool)))
        texts.append(" ".join(words).capitalize() + ".")
        labels.append(names[k] if rng.random() > 0.02 else names[int(rng.integers(3))])
    return texts, labels


def epoch_metrics(tracker: MemoryTracker) -> list[tuple[int, dict]]:
    return [(step, m) for step, m in tracker.metrics if "train_loss" in m]


# -- the three trainers ------------------------------------------------------------------------------

def test_image_trainer_reaches_97_percent_on_digits(digits):
    images, labels = digits
    tracker = MemoryTracker()
    summary = image.train_image(images, labels, {"seed": 0}, tracker)
    accuracy = summary["metrics"]["test_acc"]
    print(f"image trainer, digits: test accuracy {accuracy:.4f} ({summary['sizes']['test']} images), "
          f"{summary['samples_per_s']:.0f} samples/s, {summary['train_seconds']:.1f} s")
    assert accuracy >= 0.97
    epochs = epoch_metrics(tracker)
    assert [step for step, _ in epochs] == list(range(1, 21))
    assert {"train_loss", "val_loss", "val_acc", "samples_per_s"} <= set(epochs[-1][1])
    assert epochs[-1][1]["train_loss"] < epochs[0][1]["train_loss"]
    assert tracker.history("test_acc") == [(20, accuracy)]
    assert sorted(tracker.checkpoints) == list(range(1, 21))
    model, example = tracker.models[0]
    assert example.dtype == torch.float32 and example.shape[1:] == (1, 8, 8) and float(example.max()) <= 1.0
    assert model(example).shape == (len(example), 10) and not model.training
    assert summary["sizes"] == {"train": 1437, "val": 180, "test": 180}
    assert tracker.summary == summary and tracker.params["epochs"] == 20


def test_tabular_trainer_classifies_breast_cancer():
    bunch = load_breast_cancer()
    tracker = MemoryTracker()
    summary = tabular.train_tabular(bunch.data, bunch.target_names[bunch.target], {}, tracker,
                                    feature_names=bunch.feature_names)
    print(f"tabular trainer, breast_cancer: test accuracy {summary['metrics']['test_acc']:.4f}")
    assert summary["task"] == "classification" and summary["model"]["classes"] == ["benign", "malignant"]
    assert summary["metrics"]["test_acc"] >= 0.93
    assert all("val_acc" in m for _, m in epoch_metrics(tracker))
    model, example = tracker.models[0]
    raw = torch.as_tensor(bunch.data[:5], dtype=torch.float32)  # the model standardizes raw rows itself
    assert model(raw).argmax(1).tolist() == [int(bunch.target_names[t] == "malignant") for t in bunch.target[:5]]


def test_tabular_trainer_regresses_diabetes():
    bunch = load_diabetes()
    tracker = MemoryTracker()
    summary = tabular.train_tabular(bunch.data, bunch.target, {}, tracker)
    rmse = summary["metrics"]["test_rmse"]
    print(f"tabular trainer, diabetes: test RMSE {rmse:.1f} (label std {bunch.target.std():.1f})")
    assert summary["task"] == "regression"
    assert all("val_rmse" in m and "val_acc" not in m for _, m in epoch_metrics(tracker))
    assert rmse < 0.85 * bunch.target.std()  # clearly better than predicting the mean
    model, _ = tracker.models[0]
    with torch.no_grad():
        predictions = model(torch.as_tensor(bunch.data[:50], dtype=torch.float32))
    assert 50 < float(predictions.mean()) < 250  # in label units


def test_text_trainer_separates_topics():
    texts, labels = topic_corpus(3000, seed=0)
    tracker = MemoryTracker()
    summary = text.train_text(texts, labels, {}, tracker)
    print(f"text trainer, topics: test accuracy {summary['metrics']['test_acc']:.4f}")
    assert summary["metrics"]["test_acc"] >= 0.9
    vocabulary = summary["model"]["vocabulary"]
    assert "goal" in vocabulary and "." not in vocabulary
    model, example = tracker.models[0]
    ids = text.Vocabulary(vocabulary).encode(["Garlic and butter in the oven", "zzz unknown"], 256)
    assert model(ids).argmax(1)[0].item() == summary["model"]["classes"].index("food")
    assert example.dtype == torch.int64


# -- checkpoints and resuming ------------------------------------------------------------------------

def test_a_new_call_resumes_after_the_last_checkpoint(digits):
    images, labels = digits
    first = MemoryTracker()
    image.train_image(images, labels, {"epochs": 2, "checkpoint_every": 1}, first)
    assert sorted(first.checkpoints) == [1, 2]
    again = MemoryTracker(checkpoints=first.checkpoints)
    summary = image.train_image(images, labels, {"epochs": 4, "checkpoint_every": 1}, again)
    assert summary["resumed_after_epoch"] == 2 and summary["epochs_run"] == 2
    assert [step for step, _ in epoch_metrics(again)] == [3, 4]
    assert sorted(again.checkpoints) == [1, 2, 3, 4]


class Killed(Exception):
    pass


class DiesAfter(MemoryTracker):
    """Loses its worker right after saving the checkpoint of ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def save_checkpoint(self, data: bytes, step: int) -> None:
        super().save_checkpoint(data, step)
        if step == self.step:
            raise Killed


def test_an_interrupted_run_resumes_to_the_same_result(digits):
    images, labels = digits
    params = {"epochs": 4, "checkpoint_every": 2}
    straight = MemoryTracker()
    expected = image.train_image(images, labels, params, straight)
    dying = DiesAfter(2)
    with pytest.raises(Killed):
        image.train_image(images, labels, params, dying)
    resumed = MemoryTracker(checkpoints=dict(dying.checkpoints))
    got = image.train_image(images, labels, params, resumed)
    assert got["metrics"] == expected["metrics"]  # model, optimizer and every RNG came back
    assert epoch_metrics(resumed)[-1][1]["val_loss"] == epoch_metrics(straight)[-1][1]["val_loss"]


def test_a_checkpoint_of_another_model_is_refused(digits):
    images, labels = digits
    first = MemoryTracker()
    image.train_image(images, labels, {"epochs": 1, "hidden": 8}, first)
    with pytest.raises(TrainerError, match="hidden"):
        image.train_image(images, labels, {"epochs": 2, "hidden": 16}, MemoryTracker(checkpoints=first.checkpoints))


def test_a_finished_run_is_not_trained_again():
    bunch = load_breast_cancer()
    first = MemoryTracker()
    done = tabular.train_tabular(bunch.data, bunch.target, {"epochs": 3}, first)
    again = MemoryTracker(checkpoints=first.checkpoints)
    summary = tabular.train_tabular(bunch.data, bunch.target, {"epochs": 3}, again)
    assert summary["epochs_run"] == 0 and epoch_metrics(again) == []
    assert summary["metrics"] == done["metrics"] and again.models


# -- params and splits ----------------------------------------------------------------------------------

def test_params_are_checked_and_completed():
    params = resolve_params({"epochs": "5", "lr": 0.1, "augment": "false", "unknown": 1}, image.PARAMS)
    assert params["epochs"] == 5 and params["lr"] == 0.1 and params["augment"] is False
    assert params["batch_size"] == 64 and params["seed"] == 0 and "unknown" not in params
    for bad, message in (({"epochs": 1.5}, "epochs must be a whole number"), ({"epochs": 0}, "at least 1"),
                         ({"lr": "fast"}, "lr must be float"), ({"lr": float("nan")}, "lr must be float"),
                         ({"augment": "maybe"}, "augment must be bool")):
        with pytest.raises(TrainerError, match=message):
            resolve_params(bad, image.PARAMS)


def test_a_diverging_run_stops_with_a_message():
    bunch = load_diabetes()
    tracker = MemoryTracker()
    with pytest.raises(TrainerError, match="diverged in epoch 1"):
        tabular.train_tabular(bunch.data, bunch.target, {"lr": 1e12}, tracker)
    assert tracker.metrics == []  # the server refuses non-finite values; nothing was sent


def test_local_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    a, b = make_split(len(labels), 3, strata=labels), make_split(len(labels), 3, strata=labels)
    assert all(np.array_equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)))
    assert not np.array_equal(a.test, make_split(len(labels), 4, strata=labels).test)
    assert a.sizes() == {"train": 160, "val": 20, "test": 20}
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(200))
    assert np.bincount(labels[a.test]).tolist() == [10, 5, 3, 2]


def test_recorded_split_is_used_and_missing_parts_come_from_train():
    bunch = load_breast_cancer()
    recorded = {"train": list(range(0, 400)), "test": list(range(400, 569))}
    tracker = MemoryTracker()
    summary = tabular.train_tabular(bunch.data, bunch.target, {"epochs": 2}, tracker, split=recorded)
    assert summary["sizes"] == {"train": 360, "val": 40, "test": 169}
    parts = make_split(569, 0, recorded={"train": range(500), "val": range(500, 569)})
    assert len(parts.val) == 69 and len(parts.test) == 50 and not set(parts.test) & set(parts.train)
    with pytest.raises(TrainerError, match="no train part"):
        make_split(10, 0, recorded={"test": [1, 2]})


def test_task_is_chosen_from_the_label():
    assert tabular.choose_task(["a", "b"]) == "classification"
    assert tabular.choose_task(np.array([0, 1, 2, 1])) == "classification"
    assert tabular.choose_task(np.array([0.0, 1.0])) == "classification"
    assert tabular.choose_task(np.arange(100)) == "regression"
    assert tabular.choose_task(np.array([0.5, 1.5, 2.0])) == "regression"


# -- reading dataset versions and the job environment -------------------------------------------------

class StubVersion:
    """What the trainers use of ``sdk.datasets.DatasetVersion``, over in-memory data."""

    def __init__(self, kind, frame=None, label_column=None, text_column=None, splits=None, images=None):
        self.name, self.number, self.kind = "stub", 1, kind
        self.frame, self.label_column, self.text_column = frame, label_column, text_column
        self.split_summary = {k: len(v) for k, v in splits.items()} if splits else None
        self._splits, self.images = splits, images

    def to_pandas(self, split=None):
        return self.frame

    def splits(self):
        return self._splits

    def torch(self, split=None, transform=None, image_mode="RGB"):
        paths = sorted(self.images)
        classes = sorted({label for _, label in self.images.values() if label is not None})
        targets = [classes.index(self.images[p][1]) if self.images[p][1] is not None else -1 for p in paths]
        samples = [Image.open(io.BytesIO(self.images[p][0])) for p in paths]
        return _Items(paths, classes, targets, samples)


class _Items:
    def __init__(self, paths, classes, targets, samples):
        self.paths, self.classes, self.targets, self.samples = paths, classes, targets, samples

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.samples[i], self.targets[i]


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def test_tabular_version_with_a_split_and_missing_labels():
    bunch = load_breast_cancer()
    frame = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    frame["note"] = "free text"
    frame["diagnosis"] = pd.Series(bunch.target_names[bunch.target], dtype=object)
    frame.loc[[0, 450], "diagnosis"] = None
    version = StubVersion("tabular", frame, label_column="diagnosis",
                          splits={"train": list(range(0, 450)), "val": list(range(450, 500)),
                                  "test": list(range(500, 569))})
    tracker = MemoryTracker()
    summary = tabular.train_version(version, {"epochs": 2}, tracker)
    assert summary["sizes"] == {"train": 449, "val": 49, "test": 69}
    assert summary["model"]["features"] == [str(c) for c in bunch.feature_names]
    with pytest.raises(TrainerError, match="label column 'nope'"):
        tabular.train_version(version, {"label_column": "nope"}, MemoryTracker())


def test_text_version_reads_its_columns():
    texts, labels = topic_corpus(300, seed=1)
    version = StubVersion("text", pd.DataFrame({"body": texts, "topic": labels}), label_column="topic",
                          text_column="body")
    summary = text.train_version(version, {"epochs": 2}, MemoryTracker())
    assert summary["sizes"] == {"train": 240, "val": 30, "test": 30}
    with pytest.raises(TrainerError, match="text column"):
        text.train_version(StubVersion("text", version.frame, label_column="topic"), {}, MemoryTracker())


def test_images_version_keeps_small_images_and_maps_its_split(digits):
    images, labels = digits
    files = {f"{labels[i]}/{i:04d}.png": (_png(images[i]), str(labels[i])) for i in range(200)}
    files["unlabeled.png"] = (_png(images[0]), None)
    paths = sorted(files)
    version = StubVersion("images", splits={"train": paths[:150], "val": paths[150:175], "test": paths[175:]},
                          images=files)
    array, targets, classes, recorded = image.load_images(version, image_size=64)
    assert array.shape == (200, 8, 8) and array.dtype == np.uint8 and classes == [str(d) for d in range(10)]
    assert sum(len(v) for v in recorded.values()) == 200
    resized, *_ = image.load_images(version, image_size=4)
    assert resized.shape == (200, 4, 4)
    summary = image.train_version(version, {"epochs": 1}, MemoryTracker())
    assert summary["sizes"] == {"train": 150, "val": 25, "test": 25}


def test_job_env_names_the_dataset():
    env = JobEnv.from_environ({"OFFICINA_PARAMS": '{"epochs": 3}', "OFFICINA_DATASETS": '{"train": "digits:4"}',
                               "OFFICINA_TEAM": "vision", "OFFICINA_RUN_ID": "r1"})
    assert env.params == {"epochs": 3} and env.dataset_ref() == ("digits", "4") and env.project == "default"
    assert JobEnv.from_environ({"OFFICINA_DATASETS": '{"d": "wine"}'}).dataset_ref() == ("wine", "latest")
    with pytest.raises(TrainerError, match="one called 'train'"):
        JobEnv.from_environ({"OFFICINA_DATASETS": '{"a": "x:1", "b": "y:1"}'}).dataset_ref()
    with pytest.raises(TrainerError, match="OFFICINA_PARAMS"):
        JobEnv.from_environ({"OFFICINA_PARAMS": "[1]"})


def test_run_job_drives_the_sdk(monkeypatch, tmp_path):
    """``main()``'s path with the SDK's run and checkpoint store replaced by recorders."""
    from officina import sdk

    bunch = load_breast_cancer()
    frame = pd.DataFrame(bunch.data, columns=bunch.feature_names).assign(label=bunch.target)
    calls: list[tuple] = []
    stored: dict[int, bytes] = {}
    run = types.SimpleNamespace(
        log_params=lambda p: calls.append(("params", p)),
        log_metrics=lambda m, step: calls.append(("metrics", step, m)),
        log_model=lambda model, name, example_input, meta=None, registered_model=None: calls.append(
            ("model", name, tuple(example_input.shape), registered_model)) or {},
        finish=lambda status="finished": calls.append(("finish", status)),
        should_stop=lambda: stop_after is not None and any(c[0] == "metrics" and c[1] >= stop_after for c in calls))
    stop_after = None
    checkpoint = types.SimpleNamespace(save=lambda data, step: stored.__setitem__(step, data),
                                       load=lambda: (max(stored), stored[max(stored)]) if stored else None)
    got = {}

    def init(project, **_):
        got["project"] = project
        return run

    def get(name, version, team=None):
        got["ref"] = (name, version, team)
        return StubVersion("tabular", frame, label_column="label")

    monkeypatch.setattr(sdk, "init", init, raising=False)
    monkeypatch.setattr(sdk, "checkpoint", checkpoint, raising=False)
    monkeypatch.setattr(sdk.datasets, "get", get)
    monkeypatch.chdir(tmp_path)
    environ = {"OFFICINA_PARAMS": json.dumps({"epochs": 3, "checkpoint_every": 2}),
               "OFFICINA_DATASETS": '{"train": "cancer:2"}', "OFFICINA_PROJECT": "p", "OFFICINA_TEAM": "t"}
    assert job.run_job("tabular", tabular.train_version, environ) == 0
    assert got == {"project": "p", "ref": ("cancer", "2", "t")}
    assert [c[1] for c in calls if c[0] == "metrics"] == [1, 2, 3, 3] and calls[-1] == ("finish", "finished")
    assert ("model", "model", (2, 30), None) in calls and sorted(stored) == [2, 3]
    assert json.loads((tmp_path / "summary.json").read_text())["task"] == "classification"
    bad = dict(environ, OFFICINA_PARAMS='{"epochs": -1}')
    assert job.run_job("tabular", tabular.train_version, bad) == 2

    # told to stop (pruned, cancelled, preempted): it checkpoints the epoch it finished and exits cleanly
    calls.clear(), stored.clear()
    stop_after = 1
    long = dict(environ, OFFICINA_PARAMS=json.dumps({"epochs": 5, "checkpoint_every": 3}))
    assert job.run_job("tabular", tabular.train_version, long) == 0
    assert [c[1] for c in calls if c[0] == "metrics"] == [1] and sorted(stored) == [1]
    assert calls[-1] == ("finish", "killed") and not any(c[0] == "model" for c in calls)
