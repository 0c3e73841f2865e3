"""Benchmark: parse + statistics of a 1,000,000-row × 20-column CSV (issue 3 target: under 30 s).

Run: .venv/bin/python bench/bench_dataset_stats.py [--rows N]. Generates the CSV in a temp dir,
then times reading the bytes, parsing (UTF-8 check + pyarrow) and ``tabular_stats`` + preview.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from officina.platform.datasets.formats import LABEL_NAMES, choose_column, infer_schema, read_csv
from officina.platform.datasets.stats import preview_rows, tabular_stats


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """20 columns: 8 float (some missing), 5 int, 3 categorical strings, 1 free text, 1 bool, 1 date, 1 label."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for i in range(8):
        values = rng.normal(i, 1 + i, rows)
        mask = rng.random(rows) < 0.01
        cols[f"f{i}"] = pa.array(values, mask=mask)
    for i in range(5):
        cols[f"i{i}"] = pa.array(rng.integers(0, 10 ** (i + 1), rows))
    for i in range(3):
        cats = np.array([f"cat_{i}_{k}" for k in range(5 * (i + 1))])
        cols[f"c{i}"] = pa.array(cats[rng.integers(0, len(cats), rows)])
    cols["note"] = pa.array(np.char.add("item ", rng.integers(0, 10**6, rows).astype(str)))
    cols["flag"] = pa.array(rng.random(rows) < 0.3)
    cols["day"] = pa.array(np.datetime64("2020-01-01") + rng.integers(0, 1500, rows).astype("timedelta64[D]"))
    cols["label"] = pa.array(np.array(["neg", "pos", "neutral"])[rng.integers(0, 3, rows)])
    return pa.table(cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.csv")
        t0 = time.perf_counter()
        pacsv.write_csv(make_table(args.rows), path)
        gen = time.perf_counter() - t0
        size = os.path.getsize(path)
        print(f"generated {args.rows:,} rows x 20 columns, {size / 1e6:.1f} MB in {gen:.1f} s")
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            data = fh.read()
        t1 = time.perf_counter()
        frame = read_csv(data, name="bench.csv")
        schema = infer_schema(frame)
        label = choose_column(list(frame.columns), None, LABEL_NAMES)
        t2 = time.perf_counter()
        stats = tabular_stats(frame, label=label)
        preview_rows(frame, 20)
        t3 = time.perf_counter()
        # the peer: what a user would write by hand with pandas' default CSV reader
        p0 = time.perf_counter()
        peer = pd.read_csv(path)
        peer.describe(include="all")
        peer.isna().sum()
        peer_s = time.perf_counter() - p0
    assert stats["rows"] == args.rows and len(schema) == 20
    print(f"read {t1 - t0:.2f} s, parse {t2 - t1:.2f} s, stats+preview {t3 - t2:.2f} s")
    print(f"parse+stats total: {t3 - t0:.2f} s (target < 30 s) on {os.cpu_count()} CPUs")
    print(f"peer, pandas.read_csv + describe(include='all') + isna().sum(): {peer_s:.2f} s "
          "(less than ours computes: no histograms, label distribution or preview)")


if __name__ == "__main__":
    main()
