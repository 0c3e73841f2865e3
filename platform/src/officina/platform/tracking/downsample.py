"""Min/max downsampling of a metric's history, and the step tiles that keep it fast.

A chart asks for at most ``max_points`` points. When a history holds more, its step range is split
into at most ``max_points // 2`` buckets and each bucket keeps its lowest and its highest point
(the earliest step on ties), in step order, so a spike stays visible however far the series is
reduced.

Reading a million points to draw a thousand is slow, so ingest also keeps *tiles*: for each metric
and each size in ``LEVEL_SHIFTS``, the lowest and highest point and the count of every tile of
``2**shift`` steps. A bucket is always a whole number of tiles wide (``Grid``), so a read adds up a
few thousand tiles (plus the raw points of the two tiles at the range's ends) instead of every point,
and gets exactly the points a scan of every point would (``minmax`` is that scan, the reference).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Tile sizes 2**4 … 2**40 steps, 16× apart. Migration 0008 builds the same levels for existing data.
LEVEL_SHIFTS = (4, 8, 12, 16, 20, 24, 28, 32, 36, 40)
# A level is used when every bucket spans at least this many of its tiles; a read then adds up
# between 2 and 32 tiles per bucket.
TILES_PER_BUCKET = 2

Point = tuple[int, float]


@dataclass(frozen=True)
class Grid:
    """Buckets of ``width`` steps from ``base``, on tiles of ``2**shift`` steps (0: single steps)."""

    shift: int
    base: int
    width: int

    def bucket(self, step: int) -> int:
        return (step - self.base) // self.width


@dataclass(frozen=True)
class Plan:
    """What a read of ``lo..hi`` adds up: whole tiles ``tiles`` (inclusive, or None) and raw step ranges."""

    tiles: tuple[int, int] | None
    raw: tuple[tuple[int, int], ...]


def grid(lo: int, hi: int, buckets: int) -> Grid:
    """The bucket grid for steps ``lo..hi`` in at most ``buckets`` buckets, on the coarsest tiles
    that leave every bucket at least ``TILES_PER_BUCKET`` tiles wide."""
    if buckets < 1 or hi < lo:
        raise ValueError("need at least one bucket and lo <= hi")
    shift = 0
    for candidate in LEVEL_SHIFTS:
        if (hi - lo + 1) >> candidate >= TILES_PER_BUCKET * buckets:
            shift = candidate
    tile = 1 << shift
    base = lo >> shift << shift
    span = hi - base + 1
    width = -(-span // (buckets * tile)) * tile  # ceil(span / (buckets * tile)) tiles
    return Grid(shift, base, width)


def plan(lo: int, hi: int, g: Grid) -> Plan:
    """Split ``lo..hi`` into whole tiles of ``g`` and raw points at both ends.

    The tiles that hold ``lo`` and ``hi`` may also hold points outside the range, so their part of
    the range is read point by point (at most two tiles' worth).
    """
    if g.shift == 0:
        return Plan(None, ((lo, hi),))
    first, last = (lo >> g.shift) + 1, (hi >> g.shift) - 1
    if first > last:
        return Plan(None, ((lo, hi),))
    return Plan((first, last), ((lo, (first << g.shift) - 1), ((last + 1) << g.shift, hi)))


def _lower(a: Point, b: Point) -> bool:
    return a[1] < b[1] or (a[1] == b[1] and a[0] < b[0])


def _higher(a: Point, b: Point) -> bool:
    return a[1] > b[1] or (a[1] == b[1] and a[0] < b[0])


def assemble(buckets: Iterable[tuple[Point, Point]]) -> list[Point]:
    """Each bucket's (lowest, highest) points, buckets in step order, as one step-ordered list."""
    out: list[Point] = []
    for low, high in buckets:
        out.extend(sorted({low, high}))
    return out


def minmax(points: Iterable[Point], g: Grid) -> list[Point]:
    """The reference: every point's bucket on ``g``, keeping each bucket's lowest and highest point."""
    lows: dict[int, Point] = {}
    highs: dict[int, Point] = {}
    for step, value in points:
        point = (step, value)
        b = g.bucket(step)
        if b not in lows or _lower(point, lows[b]):
            lows[b] = point
        if b not in highs or _higher(point, highs[b]):
            highs[b] = point
    return assemble((lows[b], highs[b]) for b in sorted(lows))


def downsample(points: Sequence[Point], max_points: int) -> tuple[list[Point], bool]:
    """``points`` (any order, one per step) reduced to at most ``max_points`` step-ordered points;
    True when reduced."""
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if len(points) <= max_points:
        return sorted(points), False
    steps = [s for s, _ in points]
    return minmax(points, grid(min(steps), max(steps), max_points // 2)), True
