"""Worker-side model work on real models: ONNX/int8 export, evaluation, batch scoring, safe loading."""
from __future__ import annotations

import io
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, precision_score, recall_score  # noqa: E402

from officina.platform.errors import Invalid  # noqa: E402
from officina.platform.models.batch_output import table_bytes  # noqa: E402
from officina.workers.models import data, runtime  # noqa: E402
from officina.workers.models.batch import output_column, score  # noqa: E402
from officina.workers.models.evaluate import encode, evaluate, label_key  # noqa: E402
from officina.workers.models.export import convert, export, random_inputs, to_int8, to_onnx  # noqa: E402
from officina.workers.trainers.tabular import build_mlp  # noqa: E402


def _trained(x: np.ndarray, targets: torch.Tensor, outputs: int, loss, target=None, epochs: int = 80) -> bytes:
    """A tabular MLP (standardisation inside) trained full-batch, traced and saved as TorchScript."""
    torch.manual_seed(0)
    model = build_mlp(torch.from_numpy(x.mean(0)), torch.from_numpy(np.maximum(x.std(0), 1e-6)), 32, outputs, 0.0,
                      target)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt = torch.from_numpy(x)
    for _ in range(epochs):
        opt.zero_grad()
        loss(model(xt), targets).backward()
        opt.step()
    model.eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, xt[:4]), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cancer():
    """Breast cancer: a TorchScript classifier over named columns, its signature and the table."""
    ds = load_breast_cancer(as_frame=True)
    frame = ds.frame.copy()
    frame["diagnosis"] = [ds.target_names[t] for t in frame.pop("target")]
    names = list(ds.feature_names)
    x = np.array(frame[names], dtype=np.float32)
    classes = sorted(ds.target_names)  # ["benign", "malignant"]
    codes = torch.as_tensor(encode(frame["diagnosis"].to_numpy(), classes))
    model = _trained(x, codes, len(classes), torch.nn.functional.cross_entropy)
    signature = {"inputs": {"dtype": "float32", "shape": [-1, len(names)], "names": names},
                 "outputs": {"dtype": "float32", "shape": [-1, 2]}, "task": "classification", "classes": classes}
    return SimpleNamespace(model=model, signature=signature, frame=frame, x=x, y=frame["diagnosis"].to_numpy(),
                           classes=classes)


def test_onnx_export_matches_torchscript(cancer):
    onnx_bytes = to_onnx(cancer.model, cancer.signature)
    expected = runtime.load("torchscript", cancer.model).predict(cancer.x)
    got = runtime.load("onnx", onnx_bytes).predict(cancer.x)
    assert got.shape == expected.shape == (len(cancer.x), 2)
    assert np.max(np.abs(got - expected)) <= 1e-5 * max(1.0, float(np.abs(expected).max()))


def test_int8_export_is_smaller_and_agrees(cancer):
    onnx_bytes = to_onnx(cancer.model, cancer.signature)
    data_, report = export("onnx_int8", {"format": "torchscript", "signature": cancer.signature}, cancer.model,
                           cancer.x[:256], inputs="cancer:1")
    assert len(data_) < len(onnx_bytes) and report["size"] == len(data_)
    assert report["parity"]["agreement"] >= 0.9 and report["parity"]["rows"] == 256
    assert report["inputs"] == "cancer:1" and report["runtime"] == "onnxruntime"
    for key in ("latency_ms", "source_latency_ms"):
        assert set(report[key]) == {"batch1_p50", "batch64_p50"} and report[key]["batch1_p50"] > 0
    assert runtime.load("onnx_int8", to_int8(onnx_bytes)).predict(cancer.x[:3]).shape == (3, 2)


def test_export_formats_and_sources(cancer):
    signature = cancer.signature
    assert convert("torchscript", "torchscript", cancer.model, signature) == cancer.model
    onnx_bytes = convert("onnx", "torchscript", cancer.model, signature)
    assert convert("onnx", "onnx", onnx_bytes, signature) == onnx_bytes
    with pytest.raises(Invalid, match="can't be converted to TorchScript"):
        convert("torchscript", "onnx", onnx_bytes, signature)
    with pytest.raises(Invalid, match="unknown export format"):
        convert("tflite", "torchscript", cancer.model, signature)
    held_out = random_inputs(signature)
    assert held_out.shape == (256, 30) and held_out.dtype == np.float32
    _, report = export("onnx", {"format": "onnx", "signature": signature}, onnx_bytes, held_out)
    assert report["parity"]["max_abs_diff"] == 0.0 and report["inputs"] == "random normal"


def test_evaluate_classification_matches_sklearn(cancer):
    predictor = runtime.load("torchscript", cancer.model)
    results = evaluate(predictor, cancer.signature, cancer.x, cancer.y, parity_tolerance=1e-3,
                       export_onnx=lambda: to_onnx(cancer.model, cancer.signature), latency_calls=50)
    pred = np.array(cancer.classes)[predictor.predict(cancer.x).argmax(1)]
    assert results["task"] == "classification" and results["rows"] == len(cancer.x)
    m = results["metrics"]
    assert m["accuracy"] == pytest.approx(accuracy_score(cancer.y, pred)) and m["accuracy"] > 0.9
    assert m["macro_f1"] == pytest.approx(f1_score(cancer.y, pred, average="macro"))
    assert m["macro_recall"] == pytest.approx(recall_score(cancer.y, pred, average="macro"))
    assert m["macro_precision"] == pytest.approx(precision_score(cancer.y, pred, average="macro"))
    assert 0 < m["log_loss"] < 1
    recall = recall_score(cancer.y, pred, average=None, labels=cancer.classes)
    assert results["per_class"]["recall"] == pytest.approx(dict(zip(cancer.classes, recall)))
    assert results["per_class"]["support"] == {"benign": 357, "malignant": 212}
    lat = results["latency_ms"]
    assert lat["batch"] == 1 and lat["runtime"] == "torchscript" and 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    parity = results["parity"]
    assert parity["format"] == "onnx" and parity["agreement"] == 1.0 and parity["within_tolerance"] is True
    json.dumps(results)  # stored as jsonb


def test_evaluate_regression_and_label_matching():
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    scale = float(y.std())
    model = _trained(x, torch.from_numpy(y.astype(np.float32))[:, None], 1,
                     lambda out, t: torch.nn.functional.mse_loss(out / scale, t / scale),
                     target=(float(y.mean()), scale))
    signature = {"inputs": {"shape": [-1, 10], "names": None}, "outputs": {"shape": [-1, 1]}, "task": None,
                 "classes": None}
    predictor = runtime.load("torchscript", model)
    results = evaluate(predictor, signature, x, y, latency_calls=20)
    rmse = mean_squared_error(y, predictor.predict(x).reshape(-1)) ** 0.5
    assert results["task"] == "regression" and results["metrics"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert results["per_class"] is None and results["metrics"]["r2"] > 0.2
    # Labels match classes by value: 1 == 1.0 == "1"; unknown labels are -1 (counted wrong).
    assert label_key(1) == label_key(1.0) == label_key("1") and label_key(True) == "True"
    assert encode([0, "1.0", "x"], [0.0, 1.0]).tolist() == [0, 1, -1]


def test_data_selects_features_and_names_problems(cancer):
    table = data.Table("cancer", SimpleNamespace(number=1, label_column="diagnosis"), cancer.frame, "c.csv")
    x, y = data.inputs_and_labels(table, cancer.signature)
    assert x.dtype == np.float32 and x.shape == (569, 30) and np.array_equal(x, cancer.x) and y[0] == "malignant"
    with pytest.raises(Invalid, match="lacks feature column the model takes: mean radius"):
        data.inputs_and_labels(data.Table("c", table.version, cancer.frame.drop(columns="mean radius"), "c.csv"),
                               cancer.signature)
    with pytest.raises(Invalid, match="label column 'nope' is not in cancer:1"):
        data.inputs_and_labels(table, cancer.signature, "nope")
    unlabelled = data.Table("c", SimpleNamespace(number=1, label_column=None), cancer.frame, "c.csv")
    with pytest.raises(Invalid, match="has no label column"):
        data.inputs_and_labels(unlabelled, cancer.signature)
    with pytest.raises(Invalid, match="not numeric"):
        data.features(pd.DataFrame({"a": ["x", "y"]}), ["a"])
    with pytest.raises(Invalid, match="not table rows"):
        data.feature_columns(cancer.frame, {"inputs": {"shape": [-1, 3, 8, 8]}})
    nameless = {"inputs": {"shape": [-1, 29], "names": None}}
    with pytest.raises(Invalid, match="30 numeric columns besides the label where the model takes 29"):
        data.feature_columns(cancer.frame, nameless, exclude=("diagnosis",))


def test_split_rows_come_from_the_recorded_split():
    frame = pd.DataFrame({"a": range(10)})
    doc = json.dumps({"version": 1, "splits": {"train": [0, 2, 4, 6, 8, 9], "test": [7, 1, 3]}}).encode()
    blobs = SimpleNamespace(get_bytes=lambda sha: doc)
    version = SimpleNamespace(number=2, split_sha256="abc")
    assert data._split_rows(blobs, "d", version, frame, "test")["a"].tolist() == [1, 3, 7]
    with pytest.raises(Invalid, match="has no 'val' split"):
        data._split_rows(blobs, "d", version, frame, "val")
    with pytest.raises(Invalid, match="no recorded split"):
        data._split_rows(blobs, "d", SimpleNamespace(number=2, split_sha256=None), frame, "test")
    with pytest.raises(Invalid, match="pins no dataset"):
        data.pinned_table(None, blobs, 1, {})


def test_batch_scoring_adds_prediction_and_confidence(cancer):
    predictor = runtime.load("torchscript", cancer.model)
    frame = cancer.frame.copy()
    frame.loc[0, "mean radius"] = np.nan  # the model fills missing values itself
    scored = score(predictor, cancer.signature, frame, label="diagnosis", chunk=100)
    assert list(scored.columns) == [*frame.columns, "prediction", "confidence"] and len(scored) == 569
    assert set(scored["prediction"]) <= set(cancer.classes) and scored["confidence"].between(0.5, 1).all()
    assert (scored["prediction"] == cancer.y).mean() > 0.9
    assert output_column(scored, "prediction") == "prediction_2"
    for fmt in ("csv", "parquet"):
        raw, ext = table_bytes(scored.head(5), fmt)
        back = pd.read_csv(io.BytesIO(raw)) if ext == "csv" else pd.read_parquet(io.BytesIO(raw))
        assert back["prediction"].tolist() == scored["prediction"].head(5).tolist()


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickles_are_refused(tmp_path):
    target = tmp_path / "pwned"
    plain = pickle.dumps(_Evil(str(target)))
    buf = io.BytesIO()
    torch.save({"weights": _Evil(str(target))}, buf)  # a torch.save zip whose data.pkl calls open()
    assert not target.exists()
    for payload in (plain, buf.getvalue()):
        with pytest.raises(Invalid, match="not a loadable TorchScript model"):
            runtime.load("torchscript", payload)
        assert not target.exists()
    with pytest.raises(Invalid, match="not a loadable ONNX model"):
        runtime.load("onnx", plain)


def test_tasks_fail_with_one_line_reason_and_never_leave_a_row_running(monkeypatch):
    monkeypatch.setenv("OFFICINA_BROKER_URL", "redis://127.0.0.1:1/0")
    from officina.workers.tasks.models import reason, settle

    failed: list[str] = []

    def boom():
        raise RuntimeError("first line\nsecond line")

    assert settle("x", boom, lambda _: None, failed.append) == "failed"
    assert settle("x", lambda: 1, lambda _: (_ for _ in ()).throw(Invalid("cannot store")), failed.append) == "failed"
    assert failed == ["RuntimeError: first line", "cannot store"]
    assert settle("x", lambda: 1, lambda _: None, failed.append) == "succeeded" and len(failed) == 2
    assert reason(ValueError()) == "ValueError"
