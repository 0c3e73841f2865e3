"""Benchmark: tuning a built-in trainer on a real task — ASHA's compute saving, parallel efficiency,
and the best metric found against plain Optuna in one process.

Run: .venv/bin/python bench/bench_tuning.py [--task image|tabular] [--trials 20] [--epochs 20] [--seed 0]
     [--studies random,random+asha,tpe+asha] [--parallel 4] [--cpus 0.5] [--worker-concurrency 6] [--quick]

The embedded platform (web, one Celery worker declaring ``--parallel`` simulated GPUs, beat, scheduler)
starts in a temp dir; the dataset is uploaded through the SDK (``--task image``: scikit-learn's
digits as a folder of PNGs per class, for the image trainer; ``--task tabular``: breast_cancer as a
CSV, for the tabular trainer). Then one study at a time (``sdk.tune``), each with the same search space,
``--trials`` trials, ``parallel=--parallel``, ``gpus=1`` per trial (so the simulated GPUs bound the
parallelism), ``threads=1``, and ``cpus`` = this machine's cores / parallel (at most 1): the scheduler
counts a worker's CPUs (``os.cpu_count()``), so with the default ``cpus=1`` a 2-core machine would run
only 2 trials at once whatever the GPUs. The worker gets ``parallel + 2`` Celery slots: a job holds a
slot while it runs, and the tuning driver (``officina.tuning.drive``, on the io queue) needs a free one
to prune anything while every GPU runs a trial (try ``--worker-concurrency 4`` to see pruning starve).

- ``random``: random search, no early stopping (the baseline);
- ``random+asha``: random search with ASHA (``early_stopping="asha"``, min_resource 1, factor 3);
- ``tpe+asha``: TPE with ASHA;  (also possible: ``tpe``)

For each study: the best validation metric (val_acc of the final epoch of a complete trial, as the
platform reads it), the total trial compute = Σ over its trials' jobs (finished_at − started_at) ×
max(1, gpus), from ``GET /jobs/<id>``; the wall clock (the study's created_at → finished_at, server
time); the ideal wall clock = compute / parallel; the epochs actually trained (each trial's val_acc
history); where a trial's time goes (job start → epoch 1 logged, seconds per epoch, last epoch → job
end: the fixed cost no pruning can save); and how many epochs pruned trials trained after the step
they were pruned at (metrics flush, driver period, heartbeat, the epoch in progress).

The peer is plain Optuna in this one process, after the platform is stopped: ``optuna.create_study(
direction="maximize")`` with its default TPE sampler (seeded with ``--seed``), no pruner, the same space
and number of trials, each trial training the very same model with the trainer's own function
(``train_image`` / ``train_tabular`` on the data read from the same dataset version, so the same
split) and an in-memory tracker; its objective is the last epoch's val_acc, as the platform's.

Targets (the issue's): ASHA reaches the best val_acc of random search without early stopping with at
most half its trial compute; with parallel=4 over 4 simulated GPUs the wall clock is within 1.5× of
compute / 4; our best val_acc over the same number of trials is no worse than plain Optuna's.

This is a single run of each study: val_acc moves in steps of one validation sample (180 on digits,
57 on breast_cancer), and which configs get drawn is luck (the platform seeds each study's sampler with
its id as well as ``seed``, so two studies with the same seed draw different configs), so the
best-metric comparisons are noisy; rerun with other ``--seed`` values before reading much into a
one-sample difference. With fewer cores than ``--parallel`` the trials share the cores: each trial's
compute stretches (the CPU-bound start, imports and dataset decoding more than the epochs), and the
wall/ideal ratio then measures the platform's scheduling gaps, not the hardware.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

TEAM = "default"
DATASET = {"image": "digits", "tabular": "breast_cancer"}


# -- the task --------------------------------------------------------------------------------------

def search_space(task: str) -> dict[str, dict[str, Any]]:
    """The space every study and the peer search (SDK distribution dicts)."""
    from officina.sdk.tuning import choice, loguniform, uniform

    if task == "image":
        return {"lr": loguniform(1e-4, 3e-2), "weight_decay": loguniform(1e-6, 1e-2),
                "hidden": choice([16, 32, 64]), "batch_size": choice([32, 64, 128])}
    return {"lr": loguniform(1e-4, 3e-2), "weight_decay": loguniform(1e-6, 1e-2),
            "hidden": choice([32, 64, 128, 256]), "dropout": uniform(0.0, 0.5), "batch_size": choice([16, 32, 64])}


def upload_dataset(task: str, folder: Path):
    """Upload the scikit-learn dataset through the SDK; return its version."""
    from officina import sdk

    if task == "image":
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
            where = folder / "digits" / str(label)
            where.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 15).astype(np.uint8)).save(where / f"{i:04d}.png")
        return sdk.datasets.upload(DATASET[task], folder / "digits", team=TEAM)
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(folder / "breast_cancer.csv", index=False)
    return sdk.datasets.upload(DATASET[task], folder / "breast_cancer.csv", team=TEAM)


def load_for_peer(task: str, version) -> dict[str, Any]:
    """The arrays the trainer's job would read from ``version`` (read once, as a script would)."""
    if task == "image":
        from officina.workers.trainers import image

        size = image.resolve_params({}, image.PARAMS)["image_size"]  # the job's default, as the trials use
        images, labels, classes, split = image.load_images(version, size)
        return {"images": images, "labels": labels, "classes": classes, "split": split}
    from officina.workers.trainers import tabular

    features, labels, names, split = tabular.load_table(version, None)
    return {"features": features, "labels": labels, "names": names, "split": split}


def train_in_process(task: str, data: dict[str, Any], params: dict[str, Any]) -> tuple[float, int]:
    """Train the trainer's model on ``data``; return (last epoch's val_acc, validation size)."""
    from officina.workers.trainers.common import MemoryTracker

    tracker = MemoryTracker()
    if task == "image":
        from officina.workers.trainers import image

        summary = image.train_image(data["images"], data["labels"], params, tracker, classes=data["classes"],
                                    split=data["split"])
    else:
        from officina.workers.trainers import tabular

        summary = tabular.train_tabular(data["features"], data["labels"], params, tracker,
                                        feature_names=data["names"], split=data["split"])
    return tracker.history("val_acc")[-1][1], summary["sizes"]["val"]


# -- the platform's side ---------------------------------------------------------------------------

def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def run_study(label: str, task: str, args, space: dict) -> dict[str, Any]:
    """Run one study to its end; return its figures."""
    from officina import sdk

    algorithm, _, early = label.partition("+")
    began = time.monotonic()
    study = sdk.tune(trainer=task, dataset=DATASET[task], params={"epochs": args.epochs, "threads": 1},
                     space=space, metric="val_acc", mode="max", trials=args.trials, parallel=args.parallel,
                     algorithm=algorithm, early_stopping=early or None, seed=args.seed, gpus=1, cpus=args.cpus,
                     team=TEAM, name=f"bench-{label.replace('+', '-')}-{time.strftime('%H%M%S')}")
    reasons = set()  # what the study said while it ran (e.g. trials waiting for a GPU or a CPU)
    while study.refresh().state == "running":
        if study.data.get("reason"):
            reasons.add(study.data["reason"])
        if time.monotonic() - began > args.timeout:
            raise TimeoutError(f"study {label} still running after {args.timeout:g} s: {study.data}")
        time.sleep(0.5)
    client_wall = time.monotonic() - began
    trials = study.trials
    jobs = [sdk.client().get(f"/jobs/{t['job_id']}")["job"] for t in trials if t.get("job_id")]
    spans = [(_time(j["started_at"]), _time(j["finished_at"]), max(1, int(j.get("gpus") or 0)))
             for j in jobs if j.get("started_at") and j.get("finished_at")]
    compute = sum((f - s).total_seconds() * g for s, f, g in spans)
    created, finished = _time(study.data["created_at"]), _time(study.data["finished_at"])
    wall = (finished - created).total_seconds() if created and finished else client_wall
    # where a trial's time goes: job start → first epoch logged (process start, imports, dataset read,
    # epoch 1), seconds per later epoch, last epoch logged → job finished (final eval, model upload, exit)
    epochs_run, startups, per_epoch, teardowns = 0, [], [], []
    stop_lag, pruned_finished = [], 0  # epochs a pruned trial trained after the step it was pruned at
    for t, j in zip([t for t in trials if t.get("job_id")], jobs):
        points = sdk.tracking.history(t["run_id"], "val_acc") if t.get("run_id") else []
        epochs_run += len(points)
        if t["state"] == "pruned" and t.get("last_step") is not None:
            stop_lag.append(len(points) - t["last_step"])
            pruned_finished += len(points) >= args.epochs
        start, end = _time(j.get("started_at")), _time(j.get("finished_at"))
        if len(points) >= 1 and start and end:
            stamps = [_stamp(p[2]) for p in points]
            startups.append((stamps[0] - start).total_seconds())
            teardowns.append((end - stamps[-1]).total_seconds())
            if len(stamps) >= 2:
                per_epoch.append((stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1))
    events = sorted([(s, 1) for s, _, _ in spans] + [(f, -1) for _, f, _ in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    states = [t["state"] for t in trials]
    first_start = min((s for s, _, _ in spans), default=None)
    last_finish = max((f for _, f, _ in spans), default=None)
    best = study.best
    pruned_at = sorted(t.get("last_step") or 0 for t in trials if t["state"] == "pruned")
    return {"label": label, "state": study.state, "reason": study.data.get("reason", ""),
            "best": best["value"] if best else None, "best_params": best["params"] if best else None,
            "complete": states.count("complete"), "pruned": states.count("pruned"),
            "failed": sum(s not in ("complete", "pruned") for s in states), "trials": len(trials),
            "jobs": [j["state"] for j in jobs], "compute": compute, "wall": wall, "client_wall": client_wall,
            "ideal": compute / args.parallel, "epochs_run": epochs_run, "peak": peak,
            "startup": (first_start - created).total_seconds() if first_start and created else math.nan,
            "tail": (finished - last_finish).total_seconds() if finished and last_finish else math.nan,
            "durations": sorted((f - s).total_seconds() for s, f, _ in spans), "pruned_at": pruned_at,
            "startup_s": _median(startups), "epoch_s": _median(per_epoch), "teardown_s": _median(teardowns),
            "reasons": sorted(reasons), "stop_lag": sorted(stop_lag), "pruned_finished": pruned_finished}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else math.nan


def _stamp(value: Any) -> datetime:
    """A metric point's timestamp (epoch seconds or ISO text) as an aware datetime."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return _time(value)


# -- the peer --------------------------------------------------------------------------------------

def run_peer(task: str, data: dict[str, Any], args, space: dict) -> dict[str, Any]:
    """Plain Optuna in this process: default TPE, no pruner, the same space and trials."""
    import optuna

    from officina.workers.trainers.common import TrainerError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = []

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {"epochs": args.epochs, "threads": 1}
        for name, d in space.items():
            if d["type"] == "choice":
                params[name] = trial.suggest_categorical(name, d["choices"])
            elif d["type"] == "int":
                params[name] = trial.suggest_int(name, d["low"], d["high"], step=d.get("step") or 1, log=d["log"])
            else:
                params[name] = trial.suggest_float(name, d["low"], d["high"], step=d.get("step"), log=d["log"])
        value, n_val = train_in_process(task, data, params)
        sizes.append(n_val)
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    began = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, catch=(TrainerError,))
    seconds = time.perf_counter() - began
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"best": study.best_value if done else None, "best_params": study.best_params if done else None,
            "complete": len(done), "compute": seconds, "val_size": sizes[0] if sizes else None}


# -- report ----------------------------------------------------------------------------------------

def _acc(value: float | None, n_val: int | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ({round(value * n_val)}/{n_val})" if n_val else "")


def report(args, studies: dict[str, dict], peer: dict, n_val: int | None, total_s: float) -> None:
    print()
    print(f"task: {args.task} trainer on {DATASET[args.task]}, {args.trials} trials × {args.epochs} epochs, "
          f"parallel={args.parallel} over {args.parallel} simulated GPUs (gpus=1, threads=1 per trial), "
          f"cpus={args.cpus:g} per trial on {os.cpu_count()} cores, worker concurrency {args.worker_concurrency}, "
          f"seed {args.seed}")
    print()
    header = (f"{'study':<13} {'state':<9} {'done/pruned/failed':>18} {'best val_acc':>18} {'epochs':>7} "
              f"{'compute s':>10} {'wall s':>8} {'ideal s':>8} {'wall/ideal':>10} {'peak':>5}")
    print(header)
    print("-" * len(header))
    for s in studies.values():
        print(f"{s['label']:<13} {s['state']:<9} {s['complete']:>8}/{s['pruned']}/{s['failed']:<7} "
              f"{_acc(s['best'], n_val):>18} {s['epochs_run']:>7} {s['compute']:>10.1f} {s['wall']:>8.1f} "
              f"{s['ideal']:>8.1f} {s['wall'] / s['ideal'] if s['ideal'] else math.nan:>10.2f} {s['peak']:>5}")
    print(f"{'plain optuna':<13} {'1 process':<9} {peer['complete']:>8}/0/{args.trials - peer['complete']:<7} "
          f"{_acc(peer['best'], n_val):>18} {args.trials * args.epochs:>7} {peer['compute']:>10.1f} "
          f"{peer['compute']:>8.1f} {'':>8} {'':>10} {1:>5}")
    print()
    for s in studies.values():
        d = s["durations"]
        med = d[len(d) // 2] if d else math.nan
        print(f"  {s['label']}: trial job seconds min {d[0] if d else math.nan:.1f} / median {med:.1f} / "
              f"max {d[-1] if d else math.nan:.1f}; first trial started {s['startup']:.1f} s after the study was "
              f"created, the study ended {s['tail']:.1f} s after its last job"
              + (f"; pruned after steps {s['pruned_at']}" if s["pruned_at"] else "")
              + (f"; reason: {s['reason']}" if s["reason"] else ""))
        full = s["startup_s"] + (args.epochs - 1) * s["epoch_s"] + s["teardown_s"]
        print(f"    per trial (medians): job start → epoch 1 logged {s['startup_s']:.1f} s, then "
              f"{s['epoch_s']:.2f} s per epoch, last epoch → job end {s['teardown_s']:.1f} s; so a trial stopped "
              f"right after epoch 1 costs ≈ {s['startup_s'] + s['teardown_s']:.1f} s of a full trial's ≈ {full:.1f} s "
              f"({(s['startup_s'] + s['teardown_s']) / full:.0%})")
        if s["stop_lag"]:
            print(f"    pruned trials trained {sum(s['stop_lag'])} epochs after the step they were pruned at "
                  f"(median {_median(s['stop_lag'])}, max {max(s['stop_lag'])}); {s['pruned_finished']} of "
                  f"{s['pruned']} had trained all {args.epochs} epochs before they stopped (full compute, "
                  "yet not counted for the best)")
        for reason in s["reasons"]:
            print(f"    study said while running: {reason}")
        print(f"    best params: {s['best_params']}")
    print(f"  plain optuna best params: {peer['best_params']}")

    rows: list[tuple[str, str, str, str, str]] = []

    def row(figure: str, ours: str, theirs: str, target: str, met: bool | None) -> None:
        rows.append((figure, ours, theirs, target, "—" if met is None else "yes" if met else "MISSED"))

    base = studies.get("random")
    for asha_label in ("random+asha", "tpe+asha"):
        asha = studies.get(asha_label)
        if not (base and asha and base["best"] is not None):
            continue
        note = "" if asha_label == "random+asha" else " (different sampler)"
        if asha["best"] is None:
            row(f"best val_acc, {asha_label} vs random{note}", "—", _acc(base["best"], n_val), "≥ random", False)
        else:
            diff = asha["best"] - base["best"]
            row(f"best val_acc, {asha_label} vs random{note}", _acc(asha["best"], n_val), _acc(base["best"], n_val),
                "≥ random", diff >= -1e-12)
            row(f"  difference{note}", f"{diff:+.4f}" + (f" ({round(diff * n_val):+d} val samples)" if n_val else ""),
                "", "≥ 0", diff >= -1e-12)
        ratio = asha["compute"] / base["compute"] if base["compute"] else math.nan
        row(f"trial compute, {asha_label} / random{note}", f"{asha['compute']:.1f} s", f"{base['compute']:.1f} s",
            "ratio ≤ 0.50", ratio <= 0.5)
        row(f"  ratio{note}", f"{ratio:.2f}", "", "≤ 0.50", ratio <= 0.5)
    for s in studies.values():
        ratio = s["wall"] / s["ideal"] if s["ideal"] else math.nan
        row(f"wall / (compute/{args.parallel}), {s['label']}", f"{s['wall']:.1f} s", f"{s['ideal']:.1f} s ideal",
            f"ratio ≤ 1.5 ({ratio:.2f})", ratio <= 1.5)
    ours_main = studies.get("tpe+asha") or next(iter(studies.values()))
    if peer["best"] is not None:
        row(f"best val_acc, {ours_main['label']} vs plain Optuna", _acc(ours_main["best"], n_val),
            _acc(peer["best"], n_val), "≥ plain Optuna",
            ours_main["best"] is not None and ours_main["best"] >= peer["best"] - 1e-12)
        best_ours = max((s["best"] for s in studies.values() if s["best"] is not None), default=None)
        row("best val_acc, best of our studies vs plain Optuna", _acc(best_ours, n_val), _acc(peer["best"], n_val),
            "≥ plain Optuna", best_ours is not None and best_ours >= peer["best"] - 1e-12)
        row(f"time to result, {ours_main['label']} wall vs plain Optuna", f"{ours_main['wall']:.1f} s",
            f"{peer['compute']:.1f} s", "(info)", None)
    widths = [max(len(r[i]) for r in rows + [("figure", "Officina", "peer/baseline", "target", "met?")])
              for i in range(5)]
    print()
    line = "  ".join(h.ljust(w) for h, w in zip(("figure", "Officina", "peer/baseline", "target", "met?"), widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()
    print(f"bench total {total_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--task", choices=("image", "tabular"), default="image")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 20; quick 4)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trial (default: the trainer's default, 20 image, 60 tabular)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=4, help="trials at once = simulated GPUs")
    parser.add_argument("--worker-concurrency", type=int, default=None,
                        help="Celery slots of the one worker (default parallel + 2, so the tuning driver and the "
                             "sweep get a slot while every GPU runs a trial)")
    parser.add_argument("--cpus", type=float, default=None,
                        help="CPUs each trial asks for (default: this machine's cores / parallel, at most 1, so "
                             "the scheduler's CPU accounting does not cap the parallelism below --parallel)")
    parser.add_argument("--studies", default="random,random+asha,tpe+asha",
                        help="comma-separated: random, tpe, random+asha, tpe+asha, random+median …")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one study may take")
    parser.add_argument("--quick", action="store_true", help="a tiny run (4 trials × 3 epochs) to check it works")
    args = parser.parse_args()
    if args.trials is None:
        args.trials = 4 if args.quick else 20
    if args.epochs is None:
        args.epochs = 3 if args.quick else 20 if args.task == "image" else 60
    if args.cpus is None:
        args.cpus = min(1.0, (os.cpu_count() or 1) / args.parallel)
    if args.worker_concurrency is None:
        args.worker_concurrency = args.parallel + 2
    labels = [s.strip() for s in args.studies.split(",") if s.strip()]

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from officina import sdk
    from stack import embedded

    t0 = time.monotonic()
    space = search_space(args.task)
    studies: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        with embedded(processes=("web", "worker", "beat", "scheduler"), job_sweep_s=1.0, scheduler_interval_s=1.0,
                      worker_concurrency=args.worker_concurrency, worker_simulated_gpus=args.parallel,
                      worker_queues="cpu,gpu,io") as running:
            sdk.connect(running.url, running.token)
            version = upload_dataset(args.task, Path(tmp))
            data = load_for_peer(args.task, version)
            print(f"stack up and {DATASET[args.task]} uploaded in {time.monotonic() - t0:.0f} s", flush=True)
            for label in labels:
                print(f"study {label}: {args.trials} trials …", end=" ", flush=True)
                studies[label] = s = run_study(label, args.task, args, space)
                print(f"{s['state']} in {s['wall']:.0f} s: best {s['best']}, compute {s['compute']:.0f} s, "
                      f"{s['complete']} complete / {s['pruned']} pruned / {s['failed']} failed", flush=True)
    print(f"plain Optuna: {args.trials} trials …", end=" ", flush=True)
    peer = run_peer(args.task, data, args, space)
    print(f"best {peer['best']} in {peer['compute']:.0f} s", flush=True)
    report(args, studies, peer, peer["val_size"], time.monotonic() - t0)


if __name__ == "__main__":
    main()
