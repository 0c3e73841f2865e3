"""A model's gate policy (the tests a version must pass before an alias moves) and the judge.

Policy (every key optional except ``dataset`` for evaluating at all)::

    {"dataset": {"name": "bc", "version": 2, "split": "test", "label_column": null},
     "metrics": {"accuracy": {"min": 0.9}, "rmse": {"max": 1.5}},
     "min_class_recall": 0.8,        # every class's recall on the pinned data
     "max_regression": 0.01,         # the primary metric may be at most this much worse than the alias holder's
     "primary_metric": "accuracy",   # default: accuracy (classification), r2 (regression)
     "latency_p95_ms": 50,           # single-row prediction latency budget
     "parity_tolerance": 0.0001,     # ONNX export vs the original, max absolute output difference
     "auto_evaluate": true}          # evaluate each new version when it is logged

The judge is pure: it takes an evaluation's results and the alias holder's, and says which gates pass.
Gates are judged again at promotion time, against the version holding the alias then.
"""
from __future__ import annotations

import math
from typing import Any

from officina.platform.errors import Invalid

POLICY_KEYS = ("dataset", "metrics", "min_class_recall", "max_regression", "primary_metric", "latency_p95_ms",
               "parity_tolerance", "auto_evaluate")
DATASET_KEYS = ("name", "version", "split", "label_column")
LOWER_IS_BETTER = ("rmse", "mae", "log_loss", "loss", "mse")
KNOWN_METRICS = ("accuracy", "macro_f1", "macro_recall", "macro_precision", "log_loss", "rmse", "mae", "r2", "mse")


def _number(value: Any, field: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"{field} must be a number", field=field)
    if not low <= value <= high:
        raise Invalid(f"{field} must be between {low:g} and {high:g}, not {value:g}", field=field)
    return float(value)


def validate_policy(policy: Any) -> dict:
    """The policy, checked and normalised.

    Raises:
        Invalid: unknown keys, a bad dataset pin, thresholds that are not numbers in range.
    """
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise Invalid("the gate policy must be a JSON object", field="policy")
    unknown = sorted(set(policy) - set(POLICY_KEYS))
    if unknown:
        raise Invalid(f"unknown gate policy key(s): {', '.join(unknown)}; known: {', '.join(POLICY_KEYS)}",
                      field="policy")
    out: dict[str, Any] = {}
    if policy.get("dataset") is not None:
        pin = policy["dataset"]
        if isinstance(pin, str):  # "bc:2" or "bc:2:test"
            parts = pin.split(":")
            if len(parts) not in (2, 3):
                raise Invalid("dataset must be {\"name\", \"version\"} or \"name:version[:split]\"",
                              field="policy.dataset")
            pin = {"name": parts[0], "version": parts[1], "split": parts[2] if len(parts) == 3 else None}
        if not isinstance(pin, dict) or set(pin) - set(DATASET_KEYS) or not pin.get("name"):
            raise Invalid("dataset must name a dataset and pin a version: {\"name\", \"version\", \"split\", "
                          "\"label_column\"}", field="policy.dataset")
        version = pin.get("version")
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise Invalid("dataset version must be pinned to a number (gates compare like with like)",
                          field="policy.dataset.version")
        for key in ("name", "split", "label_column"):
            if pin.get(key) is not None and not isinstance(pin[key], str):
                raise Invalid(f"dataset {key} must be a string", field=f"policy.dataset.{key}")
        out["dataset"] = {"name": pin["name"], "version": version, "split": pin.get("split") or None,
                          "label_column": pin.get("label_column") or None}
    if policy.get("metrics") is not None:
        metrics = policy["metrics"]
        if not isinstance(metrics, dict):
            raise Invalid("metrics must map a metric to {\"min\": x} or {\"max\": x}", field="policy.metrics")
        out["metrics"] = {}
        for name, bound in metrics.items():
            if name not in KNOWN_METRICS:
                raise Invalid(f"unknown metric {name!r}; known: {', '.join(KNOWN_METRICS)}",
                              field=f"policy.metrics.{name}")
            if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                bound = {"max": bound} if name in LOWER_IS_BETTER else {"min": bound}
            if not isinstance(bound, dict) or not bound or set(bound) - {"min", "max"}:
                raise Invalid(f"metrics.{name} must be {{\"min\": x}} and/or {{\"max\": x}}",
                              field=f"policy.metrics.{name}")
            out["metrics"][name] = {k: _number(v, f"policy.metrics.{name}.{k}", low=-math.inf)
                                    for k, v in bound.items()}
    if policy.get("min_class_recall") is not None:
        out["min_class_recall"] = _number(policy["min_class_recall"], "policy.min_class_recall", high=1.0)
    if policy.get("max_regression") is not None:
        out["max_regression"] = _number(policy["max_regression"], "policy.max_regression")
    if policy.get("primary_metric") is not None:
        if policy["primary_metric"] not in KNOWN_METRICS:
            raise Invalid(f"unknown primary_metric {policy['primary_metric']!r}; known: {', '.join(KNOWN_METRICS)}",
                          field="policy.primary_metric")
        out["primary_metric"] = policy["primary_metric"]
    if policy.get("latency_p95_ms") is not None:
        out["latency_p95_ms"] = _number(policy["latency_p95_ms"], "policy.latency_p95_ms", low=0.001)
    if policy.get("parity_tolerance") is not None:
        out["parity_tolerance"] = _number(policy["parity_tolerance"], "policy.parity_tolerance", high=1e6)
    if policy.get("auto_evaluate") is not None:
        if not isinstance(policy["auto_evaluate"], bool):
            raise Invalid("auto_evaluate must be true or false", field="policy.auto_evaluate")
        out["auto_evaluate"] = policy["auto_evaluate"]
    return out


def primary_metric(policy: dict, task: str | None) -> str:
    """The metric the regression gate compares: the policy's, else accuracy or r2 by task."""
    return policy.get("primary_metric") or ("r2" if task == "regression" else "accuracy")


def _gate(name: str, passed: bool, detail: str) -> dict:
    return {"gate": name, "passed": bool(passed), "detail": detail}


def judge(policy: dict, results: dict, *, baseline: dict | None = None, baseline_label: str | None = None,
          target_alias: str = "production") -> list[dict]:
    """The gates of ``policy`` judged on an evaluation's ``results``.

    ``baseline`` is the results of the version holding ``target_alias`` on the same pinned data (None when
    no version holds it, or ``{"missing": reason}`` when it has no such evaluation).
    """
    gates: list[dict] = []
    metrics = results.get("metrics") or {}
    for name, bound in (policy.get("metrics") or {}).items():
        value = metrics.get(name)
        if value is None:
            gates.append(_gate(f"{name}", False, f"{name} was not computed (have: {', '.join(sorted(metrics))})"))
            continue
        ok = ("min" not in bound or value >= bound["min"]) and ("max" not in bound or value <= bound["max"])
        want = " and ".join(f"{'≥' if k == 'min' else '≤'} {v:g}" for k, v in bound.items())
        gates.append(_gate(name, ok, f"{name} {value:.4g} (needs {want})"))
    if "min_class_recall" in policy:
        need = policy["min_class_recall"]
        recall = (results.get("per_class") or {}).get("recall") or {}
        if not recall:
            gates.append(_gate("class recall", False, "per-class recall was not computed (not a classifier?)"))
        else:
            low = {label: r for label, r in recall.items() if r < need}
            worst = min(recall, key=recall.get)
            detail = (f"every class ≥ {need:g} (lowest: {worst} {recall[worst]:.4g})" if not low else
                      "below " + f"{need:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(low.items())))
            gates.append(_gate("class recall", not low, detail))
    if "max_regression" in policy:
        name = primary_metric(policy, results.get("task"))
        allowed = policy["max_regression"]
        value = metrics.get(name)
        if baseline is None:
            gates.append(_gate("no regression", True, f"no version holds {target_alias!r} yet"))
        elif "missing" in baseline:
            gates.append(_gate("no regression", False, baseline["missing"]))
        elif value is None or (baseline.get("metrics") or {}).get(name) is None:
            gates.append(_gate("no regression", False, f"{name} is missing here or in {baseline_label}"))
        else:
            before = baseline["metrics"][name]
            worse = (value - before) if name in LOWER_IS_BETTER else (before - value)
            gates.append(_gate("no regression", worse <= allowed + 1e-12,
                               f"{name} {value:.4g} vs {before:.4g} in {baseline_label} "
                               f"({'worse' if worse > 0 else 'better'} by {abs(worse):.4g}; at most {allowed:g} worse)"))
    if "latency_p95_ms" in policy:
        latency = (results.get("latency_ms") or {}).get("p95")
        budget = policy["latency_p95_ms"]
        if latency is None:
            gates.append(_gate("latency", False, "latency was not measured"))
        else:
            gates.append(_gate("latency", latency <= budget, f"p95 {latency:.3g} ms (budget {budget:g} ms)"))
    if "parity_tolerance" in policy:
        tolerance = policy["parity_tolerance"]
        parity = results.get("parity") or {}
        diff = parity.get("max_abs_diff")
        if diff is None:
            gates.append(_gate("export parity", False, parity.get("error") or "export parity was not checked"))
        else:
            gates.append(_gate("export parity", diff <= tolerance,
                               f"{parity.get('format', 'onnx')} differs by at most {diff:.3g} "
                               f"on {parity.get('rows', '?')} rows (tolerance {tolerance:g})"))
    return gates


def passed(gates: list[dict]) -> bool:
    """Whether every gate passed."""
    return all(g["passed"] for g in gates)
