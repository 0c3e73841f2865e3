"""Seeded train/val/test splits, stratified by label when labels exist."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from officina.platform.errors import Invalid

SPLIT_METHOD = "officina-split-v1"
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass(frozen=True)
class Split:
    """Which split each item went to, the counts, and the parameters to record on the version."""

    assignment: dict[Hashable, str]
    counts: dict[str, int]
    params: dict[str, Any]

    def items(self, name: str) -> list[Hashable]:
        """The items assigned to one split, in input-sorted order."""
        return [k for k, v in self.assignment.items() if v == name]


def validate_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Check split names and fractions (each ≥ 0, summing to 1 within 1e-9); return them as a plain dict."""
    if not fractions:
        raise Invalid("at least one split fraction is required", field="fractions")
    out: dict[str, float] = {}
    for name, frac in fractions.items():
        if not isinstance(name, str) or not name:
            raise Invalid("split names must be non-empty strings", field="fractions")
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not math.isfinite(frac) or frac < 0:
            raise Invalid(f"fraction of split {name!r} must be a number ≥ 0, got {frac!r}", field="fractions",
                          split=name)
        out[name] = float(frac)
    total = math.fsum(out.values())
    if abs(total - 1.0) > 1e-9:
        raise Invalid(f"split fractions must sum to 1, they sum to {total:g}", field="fractions", total=total)
    return out


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder counts: each within 1 of n×fraction and summing to n; ties go to earlier splits."""
    exact = {k: n * f for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(fractions, key=lambda k: (-(exact[k] - counts[k]), list(fractions).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def split_items(items: Sequence[Hashable], fractions: Mapping[str, float] | None = None, *,
                labels: Sequence[Hashable | None] | None = None, seed: int = 0, stratify: bool = True) -> Split:
    """Assign each item to a split by fraction, per label when labels are given and ``stratify``; same seed, same split.

    Items are sorted first, so the split depends on the set of items, not on their order.

    Raises:
        Invalid: bad fractions, no items, duplicate items, or labels of the wrong length.
    """
    fr = validate_fractions(fractions if fractions is not None else DEFAULT_FRACTIONS)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise Invalid(f"seed must be a non-negative integer, got {seed!r}", field="seed")
    if not len(items):
        raise Invalid("there is nothing to split", field="items")
    if labels is not None and len(labels) != len(items):
        raise Invalid(f"{len(labels)} labels for {len(items)} items", field="labels")
    if len(set(items)) != len(items):
        raise Invalid("items to split must be unique", field="items")
    order = sorted(range(len(items)), key=lambda i: (type(items[i]).__name__, str(items[i])))
    groups: dict[str, list[int]] = defaultdict(list)
    stratified = labels is not None and stratify
    for i in order:
        groups[str(labels[i]) if stratified and labels is not None else ""].append(i)
    rng = np.random.Generator(np.random.PCG64(seed))
    assignment: dict[Hashable, str] = {}
    for key in sorted(groups):
        members = groups[key]
        perm = rng.permutation(len(members))
        start = 0
        for name, count in _allocate(len(members), fr).items():
            for j in perm[start:start + count]:
                assignment[items[members[j]]] = name
            start += count
    ordered = {items[i]: assignment[items[i]] for i in order}
    counts = {name: 0 for name in fr}
    for name in ordered.values():
        counts[name] += 1
    params = {"method": SPLIT_METHOD, "fractions": fr, "seed": seed, "stratified": stratified,
              "items": len(items)}
    return Split(ordered, counts, params)
