"""Min/max downsampling of metric histories, and the tile arithmetic that the SQL path relies on."""
from __future__ import annotations

import random
import re
from importlib import resources

import pytest

from officina.platform.tracking import downsample
from officina.platform.tracking.downsample import LEVEL_SHIFTS, Grid, grid, minmax, plan


def brute_force(points, g: Grid):
    """Each bucket's lowest and highest point, by sorting every bucket (independent of ``minmax``)."""
    buckets: dict[int, list] = {}
    for step, value in points:
        buckets.setdefault(g.bucket(step), []).append((step, value))
    out = []
    for b in sorted(buckets):
        low = min(buckets[b], key=lambda p: (p[1], p[0]))
        high = min(buckets[b], key=lambda p: (-p[1], p[0]))
        out.extend(sorted({low, high}))
    return out


def via_tiles(points, lo: int, hi: int, buckets: int):
    """What the database does: tiles of the chosen level inside the range, raw points at its ends."""
    g = grid(lo, hi, buckets)
    p = plan(lo, hi, g)
    pieces = []  # (at, low, high, count)
    for a, b in p.raw:
        pieces += [(s, (s, v), (s, v), 1) for s, v in points if a <= s <= b]
    if p.tiles is not None:
        tiles: dict[int, list] = {}
        for s, v in points:
            if p.tiles[0] <= s >> g.shift <= p.tiles[1]:
                tiles.setdefault(s >> g.shift, []).append((s, v))
        for t, members in tiles.items():
            pieces.append((t << g.shift, min(members, key=lambda q: (q[1], q[0])),
                           min(members, key=lambda q: (-q[1], q[0])), len(members)))
    merged: dict[int, list] = {}
    for at, low, high, n in pieces:
        b = (at - g.base) // g.width
        if b not in merged:
            merged[b] = [low, high, n]
        else:
            m = merged[b]
            m[0] = min(m[0], low, key=lambda q: (q[1], q[0]))
            m[1] = min(m[1], high, key=lambda q: (-q[1], q[0]))
            m[2] += n
    total = sum(m[2] for m in merged.values())
    return downsample.assemble((merged[b][0], merged[b][1]) for b in sorted(merged)), total, g


def test_short_histories_come_back_whole_and_in_step_order():
    points = [(3, 1.0), (1, 2.0), (2, 0.5)]
    assert downsample.downsample(points, 10) == ([(1, 2.0), (2, 0.5), (3, 1.0)], False)
    assert downsample.downsample(points, 3)[1] is False


def test_a_spike_and_a_dip_survive_a_thousandfold_reduction():
    rng = random.Random(7)
    points = [(i, rng.gauss(0, 1)) for i in range(200_000)]
    points[123_457] = (123_457, 1e6)
    points[7] = (7, -1e6)
    out, reduced = downsample.downsample(points, 200)
    assert reduced and len(out) <= 200
    assert (123_457, 1e6) in out and (7, -1e6) in out
    assert [s for s, _ in out] == sorted({s for s, _ in out})  # step order, no step twice
    assert set(out) <= set(points)


@pytest.mark.parametrize("n,max_points", [(1001, 1000), (5000, 200), (100_000, 1000), (12_345, 7)])
def test_minmax_matches_a_brute_force_and_respects_max_points(n, max_points):
    rng = random.Random(n)
    points = [(i * 3 + rng.randrange(3), rng.random()) for i in range(n)]
    g = grid(points[0][0], points[-1][0], max_points // 2)
    out = minmax(points, g)
    assert out == brute_force(points, g)
    assert max_points // 3 <= len(out) <= max_points  # buckets are never fewer than about 2/3 asked


def test_ties_keep_the_earliest_step():
    points = [(i, 1.0) for i in range(100)]
    g = grid(0, 99, 5)
    assert minmax(points, g) == [(b * g.width, 1.0) for b in range(5)]


def test_grid_buckets_are_whole_tiles_and_never_too_many():
    rng = random.Random(1)
    for _ in range(2000):
        lo = rng.choice([0, rng.randrange(10**6), rng.randrange(2**50)])
        hi = lo + rng.choice([0, 1, rng.randrange(100), rng.randrange(10**6), rng.randrange(10**12)])
        buckets = rng.choice([1, 5, 500, 10_000])
        g = grid(lo, hi, buckets)
        assert g.width % (1 << g.shift) == 0 and g.base % (1 << g.shift) == 0 and g.base <= lo
        assert g.bucket(hi) < buckets and g.bucket(lo) == 0
        if g.shift:
            assert (hi - lo + 1) >> g.shift >= downsample.TILES_PER_BUCKET * buckets
        finer = [s for s in LEVEL_SHIFTS if s > g.shift]
        if finer:  # the next coarser level would leave too few tiles per bucket
            assert (hi - lo + 1) >> finer[0] < downsample.TILES_PER_BUCKET * buckets


def test_plan_covers_the_range_exactly_once():
    rng = random.Random(2)
    for _ in range(2000):
        lo = rng.randrange(10**9)
        hi = lo + rng.randrange(10**7)
        g = grid(lo, hi, rng.choice([10, 500]))
        p = plan(lo, hi, g)
        spans = list(p.raw)
        if p.tiles is not None:
            spans.append((p.tiles[0] << g.shift, ((p.tiles[1] + 1) << g.shift) - 1))
        spans = sorted(s for s in spans if s[0] <= s[1])
        assert spans[0][0] == lo and spans[-1][1] == hi
        assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("case", ["dense", "sparse", "ties", "sub-range", "narrow"])
def test_reading_tiles_gives_exactly_the_points_of_a_full_scan(case):
    rng = random.Random(case)
    if case == "sparse":
        points = [(i * 1_000_003 + rng.randrange(1000), rng.random()) for i in range(30_000)]
    elif case == "ties":
        points = [(i, float(rng.randrange(3))) for i in range(50_000)]
    else:
        points = [(i, rng.gauss(0, 1)) for i in range(60_000)]
    lo, hi = points[0][0], points[-1][0]
    if case == "sub-range":
        lo, hi = 1_234, 54_321
    if case == "narrow":
        lo, hi = 10_000, 10_900
    inside = [(s, v) for s, v in points if lo <= s <= hi]
    for max_points in (100, 1000):
        got, total, g = via_tiles(points, lo, hi, max_points // 2)
        assert got == minmax(inside, g) and total == len(inside)
        if case in ("dense", "sparse", "sub-range"):
            assert g.shift > 0  # these ranges are long enough to read tiles
        if (lo, hi) == (inside[0][0], inside[-1][0]):  # the whole history: what downsample() returns
            assert got == downsample.downsample(inside, max_points)[0]


def test_the_migration_builds_the_same_levels():
    sql = (resources.files("officina.platform.db.migrations") / "0008_metric_tiles.sql").read_text()
    values = re.search(r"CROSS JOIN \(VALUES (.*?)\) AS l ", sql).group(1)
    assert tuple(int(v) for v in re.findall(r"\d+", values)) == LEVEL_SHIFTS
