"""Format detection and parsing on real scikit-learn data, and every bad tabular/text/image input."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from officina.platform.datasets.archive import read_archive
from officina.platform.datasets.formats import (check_utf8, choose_column, detect_format, infer_schema,
                                                label_image_files, load_tabular, load_text, read_csv,
                                                read_jsonl, read_parquet)
from officina.platform.errors import Invalid


def test_breast_cancer_csv_parses_with_schema_and_inferred_label(breast_cancer_csv):
    tab = load_tabular(breast_cancer_csv, "breast_cancer.csv")
    assert tab.frame.shape == (569, 31)
    assert tab.label == "label"
    schema = {c.name: c for c in tab.schema}
    assert schema["mean radius"].dtype == "float" and not schema["mean radius"].nullable
    assert schema["label"].dtype == "string"
    assert tab.frame["label"].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    assert tab.frame["mean radius"].tolist() == pytest.approx(load_breast_cancer().data[:, 0].tolist())


def test_wine_parquet_round_trip_and_user_label(wine_csv):
    frame = read_csv(wine_csv)
    frame["target"] = load_wine().target
    out = io.BytesIO()
    frame.to_parquet(out)
    tab = load_tabular(out.getvalue(), "wine.parquet", label="target")
    assert tab.label == "target" and tab.frame.shape == (178, 15)
    assert {c.name: c.dtype for c in tab.schema}["target"] == "int"


def test_schema_types_and_nullability():
    csv = b"i,f,b,s,d,n\n1,1.5,true,x,2024-01-02,\n2,,false,y,2024-02-03,3\n"
    schema = {c.name: (c.dtype, c.nullable) for c in infer_schema(read_csv(csv))}
    assert schema == {"i": ("int", False), "f": ("float", True), "b": ("bool", False), "s": ("string", False),
                      "d": ("datetime", False), "n": ("int", True)}


def test_quoted_newlines_and_bom_are_fine():
    frame = read_csv(b'\xef\xbb\xbfa,b\n"x\ny",1\n')
    assert list(frame.columns) == ["a", "b"] and frame["a"][0] == "x\ny"


def test_label_inferred_by_name_case_insensitive():
    assert choose_column(["x", "Target"], None, ("label", "target", "class", "y")) == "Target"
    assert choose_column(["x", "Y"], None, ("label", "target", "class", "y")) == "Y"
    assert choose_column(["x", "z"], None, ("label", "target", "class", "y")) is None


def test_missing_label_column_names_it_and_lists_columns(wine_csv):
    with pytest.raises(Invalid) as err:
        load_tabular(wine_csv, "wine.csv", label="quality")
    assert "'quality'" in err.value.message and "alcohol" in err.value.message
    assert err.value.details["column"] == "quality" and "label" in err.value.details["available"]


def test_ragged_csv_names_the_line(wine_csv):
    lines = wine_csv.splitlines(keepends=True)
    lines[41] = lines[41].rstrip(b"\n") + b",extra\n"
    with pytest.raises(Invalid) as err:
        read_csv(b"".join(lines), name="wine.csv")
    assert "line 42" in err.value.message and err.value.details["line"] == 42
    with pytest.raises(Invalid, match="line 3 has 1 fields"):
        read_csv(b"a,b\n1,2\n3\n")


def test_malformed_csv_is_invalid():
    with pytest.raises(Invalid, match="line"):
        read_csv(b'a,b\n1,"unterminated\n2,3\n')


def test_non_utf8_csv_names_offset_and_line(breast_cancer_csv):
    latin1 = breast_cancer_csv.replace(b"benign", "bénign".encode("latin-1"), 1)
    with pytest.raises(Invalid) as err:
        read_csv(latin1, name="bc.csv")
    offset = latin1.index(b"\xe9")
    assert err.value.details["offset"] == offset
    assert err.value.details["line"] == latin1.count(b"\n", 0, offset) + 1
    assert f"offset {offset}" in err.value.message and "0xe9" in err.value.message
    check_utf8("ünïcödé ok".encode())


@pytest.mark.parametrize("data", [b"", b"   \n", b"a,b\n"])
def test_empty_uploads(data):
    with pytest.raises(Invalid, match="empty|no rows"):
        read_csv(data)


def test_bad_headers():
    with pytest.raises(Invalid, match="more than once"):
        read_csv(b"a,a\n1,2\n")
    with pytest.raises(Invalid, match="empty name"):
        read_csv(b"a,\n1,2\n")


def test_parquet_bad_input():
    with pytest.raises(Invalid, match="empty"):
        read_parquet(b"")
    with pytest.raises(Invalid, match="not a readable Parquet"):
        read_parquet(b"PAR1 garbage")


def test_detect_format():
    assert detect_format("x.csv", b"a,b") == "csv"
    assert detect_format("x.CSV", b"a,b") == "csv"
    assert detect_format("x.bin", b"PAR1....") == "parquet"
    assert detect_format("x.jsonl", b"{}") == "jsonl"
    assert detect_format("x", b"PK\x03\x04") == "zip"
    assert detect_format("x.tgz", b"\x1f\x8b") == "tar"
    with pytest.raises(Invalid, match="cannot tell"):
        detect_format("x.exe", b"MZ")


def wine_texts() -> list[dict]:
    wine = load_wine()
    return [{"text": f"wine with {r[0]:.2f}% alcohol and {r[9]:.2f} color intensity", "label": str(t)}
            for r, t in zip(wine.data, wine.target)]


def test_text_jsonl_and_csv():
    records = wine_texts()
    data = "\n".join(json.dumps(r) for r in records).encode() + b"\n\n"
    text = load_text(data, "wine.jsonl")
    assert (text.text, text.label, len(text.frame)) == ("text", "label", 178)
    csv = pd.DataFrame(records).rename(columns={"text": "notes"}).to_csv(index=False).encode()
    text = load_text(csv, "wine.csv")
    assert (text.text, text.label) == ("notes", "label")
    with pytest.raises(Invalid, match="text column 'body' does not exist"):
        load_text(csv, "wine.csv", text="body")


def test_jsonl_bad_lines():
    with pytest.raises(Invalid, match="line 2 is not valid JSON"):
        read_jsonl(b'{"text": "a"}\n{"text": \n')
    with pytest.raises(Invalid, match="line 1 is not a JSON object"):
        read_jsonl(b'[1, 2]\n')
    with pytest.raises(Invalid, match="not UTF-8"):
        read_jsonl(b'{"text": "\xff"}\n')
    with pytest.raises(Invalid, match="empty"):
        read_jsonl(b"")


def test_digits_class_folders_give_labels(digits_zip, digits_files):
    files = read_archive(digits_zip)
    pairs = label_image_files(files)
    assert len(pairs) == 1797
    assert dict(pairs) == {p: label for p, (label, _d) in digits_files.items()}
    rooted = label_image_files(["digits/" + p for p in files])  # a zipped folder keeps its top folder
    assert rooted[0] == ("digits/" + pairs[0][0], pairs[0][1])


def test_flat_images_with_labels_csv(digits_files):
    items = list(digits_files.items())[:50]
    flat = {f"img{i}.png": d for i, (_p, (_l, d)) in enumerate(items)}
    labels = "path,label\n" + "".join(f"img{i}.png,{lab}\n" for i, (_p, (lab, _d)) in enumerate(items))
    files = {**flat, "labels.csv": labels.encode()}
    pairs = label_image_files(files, files)
    assert dict(pairs) == {f"img{i}.png": lab for i, (_p, (lab, _d)) in enumerate(items)}
    files["labels.csv"] = labels.encode() + b"ghost.png,3\n"
    with pytest.raises(Invalid, match="does not match"):
        label_image_files(files, files)
    files["labels.csv"] = b"name,label\nimg0.png,1\n"
    with pytest.raises(Invalid, match="needs a path column"):
        label_image_files(files, files)


def test_image_layout_errors():
    with pytest.raises(Invalid, match="no files"):
        label_image_files([])
    with pytest.raises(Invalid, match="no .png"):
        label_image_files(["a/readme.txt"])
    with pytest.raises(Invalid, match="class folders"):
        label_image_files(["a/1.png", "b/c/2.png", "d/3.png"])
    with pytest.raises(Invalid, match="unexpected non-image"):
        label_image_files(["a/1.png", "b/2.png", "b/notes.txt"])
    with pytest.raises(Invalid, match="labels CSV"):
        label_image_files(["1.png", "2.png"])
