"""Search spaces: checked from JSON (as the SDK's ``loguniform``, ``choice`` … write them) and turned
into Optuna distributions.

``{"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
   "layers": {"type": "int", "low": 1, "high": 4},
   "act": {"type": "choice", "choices": ["relu", "gelu"]}}``
"""
from __future__ import annotations

import math
import re
from typing import Any

from officina.platform.errors import Invalid

MAX_PARAMS = 64
MAX_CHOICES = 1000
MAX_GRID = 100_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
         "choice": {"type", "choices"}}


def _number(value: Any, where: str, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"{where} must be a {'whole ' if integer else ''}number, not {value!r}", field=where)
    if integer and int(value) != value:
        raise Invalid(f"{where} must be a whole number, not {value!r}", field=where)
    return int(value) if integer else float(value)


def parse_space(space: Any) -> dict[str, dict[str, Any]]:
    """A checked, normalised search space. Raises ``Invalid`` naming the parameter and the problem."""
    if not isinstance(space, dict) or not space:
        raise Invalid("space must be a non-empty object of parameter → distribution", field="space")
    if len(space) > MAX_PARAMS:
        raise Invalid(f"space may have at most {MAX_PARAMS} parameters", field="space")
    out: dict[str, dict[str, Any]] = {}
    for name, dist in space.items():
        where = f"space.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise Invalid(f"parameter name {name!r} must be 1-64 letters, digits, _ . -", field="space")
        if not isinstance(dist, dict) or dist.get("type") not in _KEYS:
            raise Invalid(f"{where} must be a distribution with type float, int or choice "
                          "(use loguniform, uniform, randint or choice)", field=where)
        kind = dist["type"]
        unknown = sorted(set(dist) - _KEYS[kind])
        if unknown:
            raise Invalid(f"{where}: unknown field(s) {', '.join(unknown)}", field=where)
        if kind == "choice":
            choices = dist.get("choices")
            if not isinstance(choices, list) or not choices or len(choices) > MAX_CHOICES:
                raise Invalid(f"{where}: choices must be a non-empty list of at most {MAX_CHOICES}", field=where)
            if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in choices):
                raise Invalid(f"{where}: choices must be strings, numbers, booleans or null", field=where)
            if len({repr(c) for c in choices}) != len(choices):
                raise Invalid(f"{where}: choices must be distinct", field=where)
            out[name] = {"type": "choice", "choices": list(choices)}
            continue
        integer = kind == "int"
        low = _number(dist.get("low"), f"{where}.low", integer=integer)
        high = _number(dist.get("high"), f"{where}.high", integer=integer)
        log = dist.get("log", False)
        if not isinstance(log, bool):
            raise Invalid(f"{where}.log must be true or false", field=where)
        if low >= high:
            raise Invalid(f"{where}: low ({low:g}) must be below high ({high:g})", field=where)
        if log and low <= 0:
            raise Invalid(f"{where}: a log range must be above 0 (low is {low:g})", field=where)
        step = dist.get("step")
        if step is not None:
            step = _number(step, f"{where}.step", integer=integer)
            if step <= 0 or log:
                raise Invalid(f"{where}: step must be above 0 and cannot combine with log", field=where)
        out[name] = {"type": kind, "low": low, "high": high, "log": log, "step": step}
    return out


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions of a parsed space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, d in space.items():
        if d["type"] == "choice":
            out[name] = CategoricalDistribution(d["choices"])
        elif d["type"] == "int":
            out[name] = IntDistribution(d["low"], d["high"], log=d["log"], step=d["step"] or 1)
        else:
            out[name] = FloatDistribution(d["low"], d["high"], log=d["log"], step=d["step"])
    return out


def grid(space: dict[str, dict[str, Any]]) -> dict[str, list]:
    """The grid for grid search: choices, whole ranges of ints, or floats with a step."""
    out: dict[str, list] = {}
    size = 1
    for name, d in space.items():
        if d["type"] == "choice":
            values = d["choices"]
        elif d["type"] == "int" and not d["log"]:
            values = list(range(d["low"], d["high"] + 1, d["step"] or 1))
        elif d["type"] == "float" and d["step"]:
            count = int(round((d["high"] - d["low"]) / d["step"])) + 1
            values = [d["low"] + i * d["step"] for i in range(count) if d["low"] + i * d["step"] <= d["high"] + 1e-12]
        else:
            raise Invalid(f"grid search needs a finite grid: give space.{name} choices, an int range or a "
                          "float step", field=f"space.{name}")
        size *= len(values)
        out[name] = values
    if size > MAX_GRID:
        raise Invalid(f"the grid has {size} points; at most {MAX_GRID}", field="space")
    return out
