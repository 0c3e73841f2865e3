"""A model version's input/output schema: validation, JSON rows to arrays, outputs to predictions.

A signature is JSON::

    {"inputs": {"dtype": "float32", "shape": [-1, 64], "names": ["x0", ...] | null},
     "outputs": {"dtype": "float32", "shape": [-1, 10]},
     "task": "classification" | "regression" | null, "classes": [labels...] | null}

The first dimension of every shape is the batch (-1). Pure functions only: no I/O.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from officina.platform.errors import Invalid

DTYPES = ("float32", "float64", "int32", "int64")
TASKS = ("classification", "regression")
_FLOAT_LEAF = {float, int, type(None)}
_INT_LEAF = {int}


def _tensor_spec(spec: object, where: str, *, named: bool) -> dict:
    if not isinstance(spec, dict):
        raise Invalid(f"signature {where} must be an object with dtype and shape", signature=where)
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise Invalid(f"signature {where}.dtype must be one of {', '.join(DTYPES)}; got {dtype!r}",
                      signature=f"{where}.dtype")
    shape = spec.get("shape")
    if (not isinstance(shape, list) or not shape or shape[0] not in (-1, None)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise Invalid(f"signature {where}.shape must be a list like [-1, 64]: -1 (the batch) then positive "
                      f"sizes; got {shape!r}", signature=f"{where}.shape")
    out: dict[str, Any] = {"dtype": dtype, "shape": [-1, *shape[1:]]}
    if named:
        names = spec.get("names")
        if names is not None:
            if len(shape) != 2 or not isinstance(names, list) or len(names) != shape[1] \
                    or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise Invalid(f"signature {where}.names must be {shape[1] if len(shape) == 2 else 'N'} distinct "
                              "non-empty strings, one per column of a 2-D shape", signature=f"{where}.names")
        out["names"] = names
    return out


def validate_signature(sig: object) -> dict:
    """The signature, checked and normalised (missing optional keys become null).

    Raises:
        Invalid: a malformed signature; ``details`` names the field.
    """
    if not isinstance(sig, dict):
        raise Invalid("signature must be an object with inputs and outputs", signature="invalid")
    inputs = _tensor_spec(sig.get("inputs"), "inputs", named=True)
    outputs = _tensor_spec(sig.get("outputs"), "outputs", named=False)
    task = sig.get("task")
    if task is not None and task not in TASKS:
        raise Invalid(f"signature task must be one of {', '.join(TASKS)} or null; got {task!r}",
                      signature="task")
    classes = sig.get("classes")
    if classes is not None:
        width = outputs["shape"][1] if len(outputs["shape"]) == 2 else None
        if task != "classification" or not isinstance(classes, list) \
                or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes) \
                or (width is not None and len(classes) != width and not (width == 1 and len(classes) == 2)):
            raise Invalid("signature classes must be a list of labels (strings or integers), one per output "
                          "column, and only for task classification", signature="classes")
    return {"inputs": inputs, "outputs": outputs, "task": task, "classes": classes}


def infer_signature(example_input: np.ndarray, example_output: np.ndarray, names: list[str] | None = None,
                    task: str | None = None, classes: list | None = None) -> dict:
    """A signature describing example batches (their first dimension is taken as the batch)."""
    def spec(arr: np.ndarray) -> dict:
        arr = np.asarray(arr)
        dtype = str(arr.dtype) if str(arr.dtype) in DTYPES else "float32"
        return {"dtype": dtype, "shape": [-1, *[int(d) for d in arr.shape[1:]]]}

    inputs = spec(example_input)
    inputs["names"] = list(names) if names is not None else None
    return validate_signature({"inputs": inputs, "outputs": spec(example_output), "task": task,
                               "classes": list(classes) if classes is not None else None})


def describe(signature: dict) -> str:
    """The input schema in words, for error messages: ``inputs dtype float32, shape [-1, 64]``."""
    inputs = signature["inputs"]
    text = f"inputs dtype {inputs['dtype']}, shape {inputs['shape']}"
    if inputs.get("names"):
        names = inputs["names"]
        text += ", names " + (", ".join(names) if len(names) <= 8 else f"{names[0]} … {names[-1]}")
    return text


def _type_name(value: object) -> str:
    return {str: "a string", bool: "a boolean", dict: "an object", list: "a list",
            type(None): "null"}.get(type(value), type(value).__name__)


def _check(value: object, dims: list[int], where: str, leaves: set, signature: dict) -> None:
    """Check one (nested) row against the per-row dims; raises Invalid naming the exact place."""
    if not isinstance(value, list):
        raise Invalid(f"{where} is {_type_name(value)}; expected a list of {dims[0]} values ({describe(signature)})",
                      field=where, expected=describe(signature))
    if len(value) != dims[0]:
        raise Invalid(f"{where} has {len(value)} values; expected {dims[0]} ({describe(signature)})",
                      field=where, expected=describe(signature))
    if len(dims) > 1:
        for i, item in enumerate(value):
            _check(item, dims[1:], f"{where}[{i}]", leaves, signature)
        return
    if set(map(type, value)) <= leaves:  # C-speed check of the common case
        return
    for i, v in enumerate(value):
        if type(v) not in leaves:
            kind = "a number or null" if leaves is _FLOAT_LEAF else "an integer"
            shown = repr(v) if isinstance(v, (str, bool, int, float)) else ""
            raise Invalid(f"{where}[{i}] is {_type_name(v)}{f' ({shown[:40]})' if shown else ''}; expected {kind} "
                          f"({describe(signature)})", field=f"{where}[{i}]", expected=describe(signature))


def _named_row(row: dict, names: list[str], names_set: frozenset, where: str, signature: dict) -> list:
    if row.keys() != names_set:
        missing = [n for n in names if n not in row]
        if missing:
            raise Invalid(f"{where} is missing field {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                          + f"; expected {describe(signature)}", field=f"{where}.{missing[0]}",
                          expected=describe(signature))
        unknown = sorted(str(k) for k in row if k not in names_set)
        raise Invalid(f"{where} has unknown field {unknown[0]!r}; expected {describe(signature)}",
                      field=f"{where}.{unknown[0]}", expected=describe(signature))
    return [row[n] for n in names]


def rows_to_array(signature: dict, rows: object) -> np.ndarray:
    """JSON rows as one batch of the signature's input dtype (float32 unless it says otherwise).

    A row is a (nested) list matching the input shape without its batch dimension or, when the
    signature names its columns, an object with exactly those names. ``null`` stands for NaN in
    float inputs. Raises Invalid naming the row/field and the expected schema.
    """
    inputs = signature["inputs"]
    if not isinstance(rows, list) or not rows:
        raise Invalid(f"rows must be a non-empty list of rows ({describe(signature)})", field="rows",
                      expected=describe(signature))
    dims = inputs["shape"][1:]
    is_float = inputs["dtype"].startswith("float")
    leaves = _FLOAT_LEAF if is_float else _INT_LEAF
    names = inputs.get("names")
    names_set = frozenset(names) if names else frozenset()
    if not dims:  # each row is one scalar
        _check(rows, [len(rows)], "rows", leaves, signature)
        values: list = rows
    else:
        values = rows
        for i, row in enumerate(rows):
            if names and isinstance(row, dict):
                if values is rows:
                    values = list(rows)
                values[i] = row = _named_row(row, names, names_set, f"rows[{i}]", signature)
            _check(row, dims, f"rows[{i}]", leaves, signature)
    try:
        return np.array(values, dtype=np.dtype(inputs["dtype"]))
    except (OverflowError, ValueError, TypeError) as exc:
        raise Invalid(f"rows do not fit {describe(signature)}: {exc}", field="rows",
                      expected=describe(signature)) from None


def to_predictions(signature: dict, outputs: np.ndarray) -> list:
    """Model outputs as predictions: class labels for classification, floats for one-column regression,
    otherwise the raw output rows."""
    outputs = np.asarray(outputs)
    finite = outputs.dtype.kind != "f" or bool(np.isfinite(outputs).all())
    task = signature.get("task")
    if task == "classification" and outputs.ndim == 2:
        classes = signature.get("classes")
        if outputs.shape[1] == 1:
            index = (outputs[:, 0] > 0.5).astype(np.int64)
        else:
            index = outputs.argmax(axis=1)
        if classes:
            return [classes[i] for i in index.tolist()]
        return index.tolist()
    if task == "regression" and outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    values = outputs.tolist()
    return values if finite else json_safe(values)


def json_safe(values: list) -> list:
    """``values`` with NaN and infinities replaced by None (JSON has neither)."""
    def fix(v):
        if isinstance(v, list):
            return [fix(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return fix(values)


__all__ = ["DTYPES", "TASKS", "describe", "infer_signature", "json_safe", "rows_to_array", "to_predictions",
           "validate_signature"]
