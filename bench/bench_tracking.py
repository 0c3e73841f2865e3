"""Benchmark: metric ingest and history reads, Officina vs MLflow on the same Postgres (issue 4).

Targets: ingest through the SDK ≥ 10× MLflow's ``log_batch`` points/s; reading a 100,000-point
history for a chart under 200 ms server-side and ≥ 5× faster than MLflow's ``get_metric_history``;
a 1,000,000-point history for a chart well under 200 ms server-side (read from metric tiles).

Run: .venv/bin/python bench/bench_tracking.py [--points N] [--long-points N] [--mlflow-python /tmp/mlflow-venv/bin/python]
MLflow is not a dependency of Officina: install it into a separate venv, e.g.
``python3 -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary``.
The bench starts the embedded stack in a temp dir, creates a second database ``mlflow`` on the
same embedded PostgreSQL, runs ``mlflow server`` against it, and measures both sides in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import textwrap
import time
import urllib.parse
from pathlib import Path

import psycopg

MLFLOW_CLIENT = textwrap.dedent("""
    import json, sys, time
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    url, points = sys.argv[1], int(sys.argv[2])
    client = MlflowClient(url)
    exp = client.create_experiment(f"bench-{time.time()}")
    run = client.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    for start in range(0, points, 1000):   # MLflow's log_batch takes at most 1000 metrics
        client.log_batch(run, metrics=[Metric("loss", 1.0 / (i + 1), now, i) for i in range(start, min(points, start + 1000))])
    ingest = time.perf_counter() - t0
    reads = []
    for _ in range(5):
        t0 = time.perf_counter()
        history = client.get_metric_history(run, "loss")
        reads.append(time.perf_counter() - t0)
    print(json.dumps({"ingest_s": ingest, "read_s": min(reads), "read_points": len(history)}))
""")


def wait_http(url: str, timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def ours(url: str, token: str, points: int) -> dict:
    import requests

    from officina import sdk

    sdk.connect(url, token)
    run = sdk.init(project="bench", team="default", system_metrics=False)
    t0 = time.perf_counter()
    for i in range(points):
        run.log_metric("loss", 1.0 / (i + 1), step=i)
    assert run.flush(timeout=600)
    ingest = time.perf_counter() - t0
    run.finish()
    headers = {"Authorization": f"Bearer {token}"}
    reads = {}
    for max_points in (1000, 20000):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            body = requests.get(f"{url}/api/v1/runs/{run.id}/metrics/loss?max_points={max_points}",
                                headers=headers, timeout=60).json()
            times.append(time.perf_counter() - t0)
        reads[max_points] = (min(times), len(body["points"]), body["total"])
    return {"ingest_s": ingest, "reads": reads, "run_id": run.id}


def server_side_read(services, run_id: str, max_points: int = 1000) -> float:
    """The history query alone, in the server's own code (no HTTP)."""
    from officina.platform.tracking import repo

    times = []
    with services.pool.connection() as conn:
        for _ in range(5):
            t0 = time.perf_counter()
            repo.history(conn, run_id, "loss", min_step=None, max_step=None, max_points=max_points)
            times.append(time.perf_counter() - t0)
    return min(times)


def long_history(running, points: int) -> dict:
    """Store ``points`` points of one key through the service (10,000 per call), then time chart reads."""
    import random

    import requests

    services = running.services
    admin = services.auth.principal_for_user(services.auth.get_user("admin").id)
    run = services.tracking.create_run(admin, "default", {"project": "bench", "name": "long"})
    rng = random.Random(0)
    t0 = time.perf_counter()
    for start in range(0, points, 10_000):
        services.tracking.log_metrics(admin, run.id, [{"key": "loss", "value": rng.random(), "step": i}
                                                      for i in range(start, min(points, start + 10_000))])
    ingest = time.perf_counter() - t0
    with services.pool.connection() as conn:
        conn.execute("ANALYZE metrics")
        conn.execute("ANALYZE metric_tiles")
    out = {"ingest_s": ingest, "server": {}, "http": {}}
    for max_points in (1000, 2000, 20000):
        out["server"][max_points] = server_side_read(services, run.id, max_points)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            requests.get(f"{running.url}/api/v1/runs/{run.id}/metrics/loss?max_points={max_points}",
                         headers={"Authorization": f"Bearer {running.token}"}, timeout=60).raise_for_status()
            times.append(time.perf_counter() - t0)
        out["http"][max_points] = min(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--long-points", type=int, default=1_000_000, help="points of the long history read")
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-venv/bin/python")
    args = parser.parse_args()
    from stack import embedded, free_port

    mlflow_proc = None
    with embedded(processes=("web",)) as running:
        try:
            mine = ours(running.url, running.token, args.points)
            mine["server_read_s"] = server_side_read(running.services, mine["run_id"])
            long = long_history(running, args.long_points) if args.long_points else None
            theirs = None
            if Path(args.mlflow_python).exists():
                database_url = running.settings.database_url
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE mlflow")
                parsed = urllib.parse.urlsplit(database_url)
                query = urllib.parse.parse_qs(parsed.query)
                host = query.get("host", [parsed.hostname or "127.0.0.1"])[0]
                store = f"postgresql+psycopg2://{parsed.username}@/mlflow?host={host}"
                port = free_port()
                mlflow_bin = str(Path(args.mlflow_python).parent / "mlflow")
                mlflow_proc = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", store, "--host",
                                                "127.0.0.1", "--port", str(port), "--workers", "2"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True)
                wait_http(f"http://127.0.0.1:{port}/health")
                out = subprocess.run([args.mlflow_python, "-c", MLFLOW_CLIENT, f"http://127.0.0.1:{port}",
                                      str(args.points)], capture_output=True, text=True, timeout=3600)
                if out.returncode != 0:
                    print("MLflow client failed:", out.stderr[-2000:])
                else:
                    theirs = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            if mlflow_proc is not None:
                os.killpg(mlflow_proc.pid, 15)
                mlflow_proc.wait(timeout=30)

    n = args.points
    print(f"metric ingest, {n:,} points of one key")
    print(f"  officina sdk (batched, background thread) : {n / mine['ingest_s']:>10,.0f} points/s")
    if theirs:
        print(f"  mlflow log_batch (1000 per call)          : {n / theirs['ingest_s']:>10,.0f} points/s"
              f"   → ratio {theirs['ingest_s'] / mine['ingest_s']:.1f}x (target ≥ 10x)")
    print(f"history read of {n:,} points")
    for max_points, (seconds, got, total) in mine["reads"].items():
        print(f"  officina GET …/metrics/loss?max_points={max_points:<6}: {seconds * 1000:7.1f} ms end to end "
              f"({got} points of {total})")
    print(f"  officina server-side query (chart, 1000 pts) : {mine['server_read_s'] * 1000:7.1f} ms (target < 200 ms)")
    if theirs:
        print(f"  mlflow get_metric_history (all points)      : {theirs['read_s'] * 1000:7.1f} ms "
              f"({theirs['read_points']} points) → ratio {theirs['read_s'] / mine['reads'][1000][0]:.1f}x (target ≥ 5x)")
    else:
        print("  mlflow: not measured (no MLflow venv; see the docstring)")
    if long:
        m = args.long_points
        print(f"history read of {m:,} points (stored through the service at "
              f"{m / long['ingest_s']:,.0f} points/s, 10,000 per call)")
        for max_points in long["server"]:
            print(f"  officina max_points={max_points:<6}: server-side {long['server'][max_points] * 1000:7.1f} ms, "
                  f"end to end {long['http'][max_points] * 1000:7.1f} ms (target < 200 ms for a chart)")
        print("  mlflow: not measured at this size (its ingest alone would take "
              + (f"~{m / (n / theirs['ingest_s']) / 60:.0f} min)" if theirs else "minutes)"))


if __name__ == "__main__":
    main()
