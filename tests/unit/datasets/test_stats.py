"""Statistics and previews on real scikit-learn data: numbers match numpy, everything is JSON-safe."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer

from officina.platform.datasets.formats import read_csv
from officina.platform.datasets.stats import (column_stats, image_stats, json_safe, label_distribution,
                                              preview_rows, tabular_stats, thumbnail, thumbnails)
from officina.platform.errors import Invalid


def test_breast_cancer_stats_match_numpy(breast_cancer_csv):
    frame = read_csv(breast_cancer_csv)
    stats = tabular_stats(frame, label="label")
    json.dumps(stats, allow_nan=False)
    assert stats["rows"] == 569 and stats["columns"] == 31
    radius = next(c for c in stats["column_stats"] if c["name"] == "mean radius")
    raw = load_breast_cancer().data[:, 0]
    assert radius["type"] == "float" and radius["missing"] == 0
    assert radius["min"] == pytest.approx(raw.min()) and radius["max"] == pytest.approx(raw.max())
    assert radius["mean"] == pytest.approx(raw.mean()) and radius["std"] == pytest.approx(raw.std(ddof=1))
    assert len(radius["histogram"]["counts"]) == 20 and sum(radius["histogram"]["counts"]) == 569
    assert stats["label_distribution"] == {"benign": 357, "malignant": 212}
    label = next(c for c in stats["column_stats"] if c["name"] == "label")
    assert label["distinct"] == 2 and label["top"][0] == {"value": "benign", "count": 357}


def test_missing_values_types_and_constant_columns():
    frame = read_csv(b"a,b,c,d,e\n1,x,true,2024-01-01,5\n,y,,2024-03-01,5\n3,,false,,5\n")
    cols = {c["name"]: c for c in tabular_stats(frame)["column_stats"]}
    assert (cols["a"]["type"], cols["a"]["missing"], cols["a"]["mean"]) == ("int", 1, 2.0)
    assert (cols["b"]["type"], cols["b"]["missing"], cols["b"]["distinct"]) == ("string", 1, 2)
    assert (cols["c"]["type"], cols["c"]["missing"]) == ("bool", 1)
    assert cols["d"]["type"] == "datetime" and cols["d"]["min"].startswith("2024-01-01")
    assert cols["e"]["min"] == cols["e"]["max"] == 5.0 and sum(cols["e"]["histogram"]["counts"]) == 3
    json.dumps(cols, allow_nan=False)


def test_all_missing_numeric_column():
    stats = column_stats(pd.Series([np.nan, np.nan], name="x"))
    assert stats["missing"] == 2 and stats["mean"] is None and stats["histogram"] is None


def test_unknown_label_column_is_invalid(wine_csv):
    with pytest.raises(Invalid, match="'quality' does not exist"):
        tabular_stats(read_csv(wine_csv), label="quality")


def test_preview_is_json_safe():
    frame = pd.DataFrame({"x": [1.0, np.nan, np.inf], "t": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
                          "s": ["a", None, "c"]})
    rows = preview_rows(frame, n=2)
    assert rows == [{"x": 1.0, "t": "2024-01-01T00:00:00", "s": "a"}, {"x": None, "t": None, "s": None}]
    assert json_safe({"a": np.int64(3), "b": [np.float32(0.5)], "c": np.bool_(True)}) == {"a": 3, "b": [0.5], "c": True}


def test_digit_images_stats_and_thumbnails(digits_files):
    items = [(p, label, data) for p, (label, data) in digits_files.items()]
    stats = image_stats(items)
    json.dumps(stats, allow_nan=False)
    assert stats["files"] == 1797
    assert stats["sizes"] == [{"width": 32, "height": 32, "count": 1797}]
    assert stats["width"] == {"min": 32, "max": 32, "mean": 32.0}
    assert stats["modes"] == {"L": 1797} and stats["formats"] == {"PNG": 1797}
    assert sum(stats["label_distribution"].values()) == 1797 and len(stats["label_distribution"]) == 10
    thumbs = thumbnails([(p, d) for p, _l, d in items], limit=5, size=16)
    assert len(thumbs) == 5
    img = Image.open(io.BytesIO(thumbs[0]["png"]))
    assert img.format == "PNG" and img.size == (16, 16)


def test_thumbnail_keeps_aspect_and_refuses_garbage():
    out = io.BytesIO()
    Image.new("RGB", (300, 150), "red").save(out, format="JPEG")
    assert Image.open(io.BytesIO(thumbnail(out.getvalue()))).size == (64, 32)
    with pytest.raises(Invalid, match="not a readable image"):
        thumbnail(b"not an image", path="a/x.png")
    with pytest.raises(Invalid, match="not a readable image"):
        image_stats([("a/x.png", "a", b"\x89PNG\r\n\x1a\n broken")])


def test_label_distribution_skips_missing():
    assert label_distribution(["a", "b", "a", None]) == {"a": 2, "b": 1}
