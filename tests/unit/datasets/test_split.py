"""Seeded, stratified splits on the real digits labels."""
from __future__ import annotations

import pytest
from sklearn.datasets import load_digits

from officina.platform.datasets.split import split_items, validate_fractions
from officina.platform.errors import Invalid

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@pytest.fixture(scope="module")
def digits():
    target = load_digits().target
    return [f"{t}/{i:04d}.png" for i, t in enumerate(target)], [str(t) for t in target]


def test_stratified_split_keeps_class_proportions_within_one_item(digits):
    items, labels = digits
    split = split_items(items, FRACTIONS, labels=labels, seed=42)
    assert sum(split.counts.values()) == len(items) == len(split.assignment)
    for label in set(labels):
        members = [i for i, lab in zip(items, labels) if lab == label]
        for name, frac in FRACTIONS.items():
            got = sum(1 for m in members if split.assignment[m] == name)
            assert abs(got - frac * len(members)) < 1, (label, name, got)
    assert split.params == {"method": "officina-split-v1", "fractions": FRACTIONS, "seed": 42, "stratified": True,
                            "items": 1797}


def test_same_seed_same_split_regardless_of_order(digits):
    items, labels = digits
    a = split_items(items, FRACTIONS, labels=labels, seed=7)
    b = split_items(items[::-1], FRACTIONS, labels=labels[::-1], seed=7)
    assert a.assignment == b.assignment
    c = split_items(items, FRACTIONS, labels=labels, seed=8)
    assert a.assignment != c.assignment
    assert a.counts == c.counts


def test_unstratified_split(digits):
    items, _ = digits
    split = split_items(items, {"train": 0.5, "test": 0.5}, seed=1)
    assert split.counts == {"train": 899, "test": 898} and not split.params["stratified"]
    assert len(split.items("train")) == 899


@pytest.mark.parametrize("fractions", [{"train": 0.8, "val": 0.1}, {"train": 1.1, "test": -0.1}, {},
                                       {"train": float("nan"), "test": 1.0}, {"train": "0.5", "test": 0.5},
                                       {"train": 0.5, "test": 0.5 + 1e-8}])
def test_bad_fractions(fractions):
    with pytest.raises(Invalid) as err:
        split_items(["a", "b"], fractions)
    assert err.value.details["field"] == "fractions"


def test_fractions_within_tolerance_and_zero():
    assert validate_fractions({"train": 0.7, "val": 0.2, "test": 0.1}) == {"train": 0.7, "val": 0.2, "test": 0.1}
    split = split_items(["a", "b", "c"], {"train": 1.0, "test": 0.0}, seed=0)
    assert split.counts == {"train": 3, "test": 0}


def test_bad_inputs():
    with pytest.raises(Invalid, match="nothing to split"):
        split_items([], FRACTIONS)
    with pytest.raises(Invalid, match="unique"):
        split_items(["a", "a"], FRACTIONS)
    with pytest.raises(Invalid, match="labels"):
        split_items(["a", "b"], FRACTIONS, labels=["x"])
    with pytest.raises(Invalid, match="seed"):
        split_items(["a", "b"], FRACTIONS, seed=-1)
