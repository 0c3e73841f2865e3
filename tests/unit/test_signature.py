"""Signatures: validation, JSON rows to arrays (with errors naming the field), outputs to predictions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from officina.platform.errors import Invalid
from officina.platform.models.signature import (infer_signature, rows_to_array, to_predictions,
                                                validate_signature)

DIGITS = {"inputs": {"dtype": "float32", "shape": [-1, 64], "names": None},
          "outputs": {"dtype": "float32", "shape": [-1, 10]}, "task": "classification",
          "classes": [str(i) for i in range(10)]}
NAMED = {"inputs": {"dtype": "float32", "shape": [-1, 3], "names": ["a", "b", "c"]},
         "outputs": {"dtype": "float32", "shape": [-1, 1]}, "task": "regression"}


def invalid(fn, *args) -> Invalid:
    with pytest.raises(Invalid) as info:
        fn(*args)
    return info.value


def test_validate_normalises_and_rejects():
    sig = validate_signature(NAMED)
    assert sig["classes"] is None and sig["inputs"]["names"] == ["a", "b", "c"]
    assert validate_signature({"inputs": {"shape": [None, 4]}, "outputs": {"shape": [-1]}})["inputs"] == \
        {"dtype": "float32", "shape": [-1, 4], "names": None}
    bad = [
        None,
        {"inputs": {"dtype": "float32", "shape": [64]}, "outputs": {"shape": [-1]}},
        {"inputs": {"dtype": "complex64", "shape": [-1, 2]}, "outputs": {"shape": [-1]}},
        {"inputs": {"shape": [-1, 2], "names": ["a"]}, "outputs": {"shape": [-1]}},
        {"inputs": {"shape": [-1, 2], "names": ["a", "a"]}, "outputs": {"shape": [-1]}},
        {"inputs": {"shape": [-1, 2]}, "outputs": {"shape": [-1, 3]}, "task": "ranking"},
        {"inputs": {"shape": [-1, 2]}, "outputs": {"shape": [-1, 3]}, "task": "classification",
         "classes": ["a", "b"]},
        {"inputs": {"shape": [-1, 2]}, "outputs": {"shape": [-1, 3]}, "task": "regression", "classes": [1, 2, 3]},
    ]
    for sig in bad:
        assert invalid(validate_signature, sig).details


def test_infer_signature_from_examples():
    sig = infer_signature(np.zeros((5, 1, 8, 8), np.float32), np.zeros((5, 10), np.float32),
                          task="classification", classes=list(range(10)))
    assert sig["inputs"]["shape"] == [-1, 1, 8, 8] and sig["outputs"]["shape"] == [-1, 10]
    assert sig["inputs"]["dtype"] == "float32"


def test_rows_to_array_lists_and_named_rows():
    rows = [[float(i) for i in range(64)], list(range(64))]
    arr = rows_to_array(DIGITS, rows)
    assert arr.dtype == np.float32 and arr.shape == (2, 64) and arr[1, 5] == 5.0
    arr = rows_to_array(NAMED, [{"c": 3, "a": 1, "b": 2.5}, [4, 5, 6]])
    assert arr.tolist() == [[1.0, 2.5, 3.0], [4.0, 5.0, 6.0]]
    nan = rows_to_array(NAMED, [[1, None, 3]])
    assert math.isnan(nan[0, 1])
    nested = {"inputs": {"shape": [-1, 1, 2, 2]}, "outputs": {"shape": [-1, 2]}}
    assert rows_to_array(validate_signature(nested), [[[[1, 2], [3, 4]]]]).shape == (1, 1, 2, 2)


def test_rows_to_array_errors_name_the_field_and_schema():
    good = [0.0] * 64
    err = invalid(rows_to_array, DIGITS, [good, good, good, [0.0] * 63])
    assert err.message.startswith("rows[3] has 63 values; expected 64 (inputs dtype float32, shape [-1, 64]")
    assert err.details["field"] == "rows[3]"
    err = invalid(rows_to_array, DIGITS, [good[:5] + ["abc"] + good[6:]])
    assert "rows[0][5] is a string ('abc')" in err.message and "shape [-1, 64]" in err.message
    assert "rows[0][1] is a boolean" in invalid(rows_to_array, DIGITS, [[0, True] + [0] * 62]).message
    assert "rows[1] is a number" not in invalid(rows_to_array, DIGITS, [good, 5]).message
    assert "rows[1] is int" in invalid(rows_to_array, DIGITS, [good, 5]).message
    assert "non-empty list" in invalid(rows_to_array, DIGITS, []).message
    assert "non-empty list" in invalid(rows_to_array, DIGITS, {"x": 1}).message
    err = invalid(rows_to_array, NAMED, [{"a": 1, "b": 2}])
    assert "rows[0] is missing field 'c'" in err.message and "names a, b, c" in err.message
    err = invalid(rows_to_array, NAMED, [{"a": 1, "b": 2, "c": 3, "d": 4}])
    assert "rows[0] has unknown field 'd'" in err.message
    assert "is an object" in invalid(rows_to_array, DIGITS, [{"x0": 1}]).message  # unnamed signature
    ints = validate_signature({"inputs": {"dtype": "int64", "shape": [-1, 2]}, "outputs": {"shape": [-1, 1]}})
    assert "rows[0][1] is null; expected an integer" in invalid(rows_to_array, ints, [[1, None]]).message
    assert "expected an integer" in invalid(rows_to_array, ints, [[1, 2.5]]).message
    assert rows_to_array(ints, [[1, 2]]).dtype == np.int64


def test_to_predictions():
    outputs = np.array([[0.1, 0.9] + [0] * 8, [5] + [0] * 9], np.float32)
    assert to_predictions(DIGITS, outputs) == ["1", "0"]
    assert to_predictions({**DIGITS, "classes": None}, outputs) == [1, 0]
    assert to_predictions(NAMED, np.array([[1.5], [2.0]], np.float32)) == [1.5, 2.0]
    raw = {"inputs": NAMED["inputs"], "outputs": {"shape": [-1, 2]}, "task": None}
    assert to_predictions(raw, np.array([[1, 2]], np.float32)) == [[1.0, 2.0]]
    assert to_predictions(NAMED, np.array([[np.nan]], np.float32)) == [None]
    binary = {**NAMED, "task": "classification", "classes": ["no", "yes"]}
    assert to_predictions(binary, np.array([[0.2], [0.7]], np.float32)) == ["no", "yes"]
