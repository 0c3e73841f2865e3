"""Gate policies and the judge (pure)."""
from __future__ import annotations

import pytest

from officina.platform.errors import Invalid
from officina.platform.models.gates import judge, passed, validate_policy

POLICY = validate_policy({"dataset": "bc:2:test", "metrics": {"accuracy": 0.9, "rmse": {"max": 2}},
                          "min_class_recall": 0.8, "max_regression": 0.01, "latency_p95_ms": 10,
                          "parity_tolerance": 1e-4})
GOOD = {"task": "classification", "metrics": {"accuracy": 0.95, "rmse": 1.0},
        "per_class": {"recall": {"a": 0.9, "b": 0.85}}, "latency_ms": {"p95": 3.0},
        "parity": {"format": "onnx", "max_abs_diff": 1e-6, "rows": 100}}


def test_policy_is_normalised():
    assert POLICY["dataset"] == {"name": "bc", "version": 2, "split": "test", "label_column": None}
    assert POLICY["metrics"] == {"accuracy": {"min": 0.9}, "rmse": {"max": 2.0}}


@pytest.mark.parametrize("bad, field", [
    ({"nope": 1}, "policy"),
    ({"dataset": {"name": "bc"}}, "policy.dataset.version"),
    ({"dataset": "bc:latest"}, "policy.dataset.version"),
    ({"metrics": {"accuracy": {"min": "high"}}}, "policy.metrics.accuracy.min"),
    ({"metrics": {"wow": 1}}, "policy.metrics.wow"),
    ({"min_class_recall": 1.5}, "policy.min_class_recall"),
    ({"auto_evaluate": "yes"}, "policy.auto_evaluate"),
])
def test_bad_policies_name_the_field(bad, field):
    with pytest.raises(Invalid) as caught:
        validate_policy(bad)
    assert caught.value.details["field"] == field


def test_all_gates_pass_without_a_holder():
    gates = judge(POLICY, GOOD)
    assert passed(gates) and len(gates) == 6
    assert next(g for g in gates if g["gate"] == "no regression")["detail"] == "no version holds 'production' yet"


def test_each_gate_fails_for_its_own_reason():
    bad = {"task": "classification", "metrics": {"accuracy": 0.5, "rmse": 3.0},
           "per_class": {"recall": {"a": 0.9, "b": 0.1}}, "latency_ms": {"p95": 30.0},
           "parity": {"max_abs_diff": 0.5, "rows": 10}}
    gates = {g["gate"]: g for g in judge(POLICY, bad, baseline={"metrics": {"accuracy": 0.95}},
                                           baseline_label="v1 (production)")}
    assert not any(g["passed"] for g in gates.values())
    assert "b 0.1" in gates["class recall"]["detail"]
    assert "0.95 in v1 (production)" in gates["no regression"]["detail"]


def test_regression_within_allowance_passes_and_missing_baseline_fails():
    slightly_worse = {**GOOD, "metrics": {"accuracy": 0.945, "rmse": 1.0}}
    ok = judge(POLICY, slightly_worse, baseline={"metrics": {"accuracy": 0.95}}, baseline_label="v1")
    assert passed(ok)
    missing = judge(POLICY, GOOD, baseline={"missing": "v1 has no evaluation"}, baseline_label="v1")
    assert not passed(missing)


def test_lower_is_better_metrics_regress_upwards():
    policy = validate_policy({"max_regression": 0.1, "primary_metric": "rmse"})
    gates = judge(policy, {"task": "regression", "metrics": {"rmse": 1.3}}, baseline={"metrics": {"rmse": 1.0}},
                  baseline_label="v1")
    assert not passed(gates) and "worse by 0.3" in gates[0]["detail"]
