"""Benchmark: the image trainer's throughput against the same training loop as a bare script.

Run: .venv/bin/python bench/bench_trainer_overhead.py [--epochs 10] [--repeats 3] [--threads 2] [--size 8]

Both sides train the same CNN (``image.build_cnn``) on scikit-learn's digits (uint8, upscaled to
``--size`` pixels if asked) with the same split, seed, batch size, AdamW, cosine learning rate,
shift augmentation and a validation pass per epoch, on the same device and thread count, in this
one process. The trainer adds what the platform adds: params, metrics every epoch, a checkpoint
(model + optimizer + RNG state, serialized) every ``--checkpoint-every`` epochs, the final model copy
and the summary, all sent to an in-memory tracker (so the network to the server is not measured).

``--upload-ms`` makes each checkpoint save slower, as an upload to the server would be (the trainer
saves on a background thread, one checkpoint in flight at most).

Each side runs once to warm up, then ``--repeats`` times in alternation; each side's best run is kept
(timeit's rule: slower runs measure other load on the machine, not the code), and compared:
- end to end: training samples per second of wall time over the whole call (setup included);
- in loop: samples per second of the training phase of each epoch (the trainer's ``samples_per_s``
  metric, and the same timer around the same loop in the script).
The target is trainer ≥ 95% of the script.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F

from officina.workers.trainers import image
from officina.workers.trainers.common import MemoryTracker, make_split, resolve_params, setup


def bare_script(images: np.ndarray, labels: np.ndarray, params: dict) -> tuple[float, list[float], float]:
    """The loop a user would write by hand; returns (wall seconds, in-loop samples/s per epoch, test acc)."""
    began = time.perf_counter()
    device = setup(params)
    x = torch.as_tensor(images).unsqueeze(1)  # (N, 1, H, W) uint8
    y = torch.as_tensor(labels, dtype=torch.int64)
    parts = make_split(len(y), params["seed"], strata=labels)
    train_pixels = x[torch.from_numpy(parts.train)].float().div(255)
    mean, std = train_pixels.mean(dim=(0, 2, 3)), train_pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    model = image.build_cnn(1, x.shape[-1], 10, params["hidden"], mean, std).to(device)
    xs = {k: x[torch.from_numpy(getattr(parts, k))].to(device) for k in ("train", "val", "test")}
    ys = {k: y[torch.from_numpy(getattr(parts, k))].to(device) for k in ("train", "val", "test")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    shuffle = torch.Generator().manual_seed(params["seed"])
    n, batch_size, max_shift = len(ys["train"]), params["batch_size"], max(1, x.shape[-1] // 8)

    @torch.no_grad()
    def evaluate(split: str) -> tuple[float, float]:
        model.eval()
        hits, loss = 0, 0.0
        for s in range(0, len(ys[split]), 1024):
            out, target = model(xs[split][s:s + 1024].float().div(255)), ys[split][s:s + 1024]
            loss += float(F.cross_entropy(out, target, reduction="sum"))
            hits += int((out.argmax(1) == target).sum())
        return loss / len(ys[split]), hits / len(ys[split])

    rates, history = [], []
    for epoch in range(1, params["epochs"] + 1):
        for group in optimizer.param_groups:
            group["lr"] = params["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / params["epochs"]))
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        total = torch.zeros((), device=device)
        for first in range(0, n, batch_size):
            index = order[first:first + batch_size]
            xb = image.shift_images(xs["train"][index].float().div(255), max_shift)
            loss = F.cross_entropy(model(xb), ys["train"][index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
        history.append((float(total) / n, *evaluate("val")))  # what a script prints each epoch
    _, test_acc = evaluate("test")
    return time.perf_counter() - began, rates, test_acc


class SlowUploads(MemoryTracker):
    """An in-memory tracker whose checkpoint saves take ``delay`` seconds more, like an upload to the server."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def save_checkpoint(self, data: bytes, step: int) -> None:
        time.sleep(self.delay)
        super().save_checkpoint(data, step)


def trainer(images: np.ndarray, labels: np.ndarray, params: dict, upload_s: float = 0.0
            ) -> tuple[float, list[float], float]:
    """The platform's trainer core with an in-memory tracker; same return as :func:`bare_script`."""
    began = time.perf_counter()
    tracker = SlowUploads(upload_s)
    summary = image.train_image(images, labels, params, tracker)
    wall = time.perf_counter() - began
    return wall, [v for _, v in tracker.history("samples_per_s")], summary["metrics"]["test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=8, help="upscale the 8×8 digits to this many pixels")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--upload-ms", type=float, default=0.0,
                        help="make each checkpoint save take this much longer, as an upload would")
    args = parser.parse_args()
    bunch = load_digits()
    images = (bunch.images * 255 / 16).round().astype(np.uint8)
    if args.size != 8:
        images = F.interpolate(torch.as_tensor(images).unsqueeze(1).float(), size=(args.size, args.size),
                               mode="bilinear").round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    params = resolve_params({"epochs": args.epochs, "threads": args.threads, "device": args.device,
                             "checkpoint_every": args.checkpoint_every}, image.PARAMS)
    n_train = len(make_split(len(images), params["seed"], strata=bunch.target).train)
    print(f"digits {images.shape[1]}×{images.shape[2]}, {n_train} training images, {args.epochs} epochs, "
          f"batch {params['batch_size']}, {args.threads} threads, checkpoint every {args.checkpoint_every}"
          + (f" (+{args.upload_ms:g} ms to save each)" if args.upload_ms else ""))
    sides = {"script": bare_script,
             "trainer": lambda images, labels, params: trainer(images, labels, params, args.upload_ms / 1000)}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
    for name, run in sides.items():  # warm-up, discarded
        run(images, bunch.target, params)
    for _ in range(args.repeats):
        for name, run in sides.items():
            wall, rates, acc = run(images, bunch.target, params)
            results[name].append((args.epochs * n_train / wall, statistics.median(rates), acc))
    figures = {}
    for name, rows in results.items():
        end_to_end = max(r[0] for r in rows)
        in_loop = max(r[1] for r in rows)
        figures[name] = (end_to_end, in_loop)
        print(f"{name:8s} end to end {end_to_end:9.0f} samples/s   in loop {in_loop:9.0f} samples/s   "
              f"test acc {rows[-1][2]:.4f}")
    for i, label in enumerate(("end to end", "in loop")):
        ratio = figures["trainer"][i] / figures["script"][i]
        print(f"trainer / script, {label}: {ratio:.1%} ({'meets' if ratio >= 0.95 else 'MISSES'} the 95% target)")


if __name__ == "__main__":
    main()
