"""Benchmark: online prediction throughput and latency — Officina's serving process against
``mlflow models serve`` and a bare Flask + gunicorn route, on the same model and machine.

Targets (issue 6): for a small MLP (64 → 128 → 128 → 10), at concurrency 32 at least 3× the requests/s of
``mlflow models serve``, with p99 latency lower than MLflow's at concurrency 1; and within 2× of a bare
Flask + gunicorn route calling the same model (the practical ceiling for Python serving here).

Run: .venv/bin/python bench/bench_serving.py [--duration 10] [--warmup 2] [--concurrency 1,32]
     [--client-procs 1] [--servers mlflow,bare,officina,officina-w0,...] [--mlflow-venv /work/mlflow-venv]
     [--quiet-wait 60] [--profile DIR [--profile-gil]] [--serving-processes N] [--serving-env KEY=VALUE]
(about 6 minutes on 2 CPUs with the default servers). MLflow must be installed in its own venv (never in the
project's):  python3.11 -m venv /work/mlflow-venv && /work/mlflow-venv/bin/pip install mlflow torch==2.13.0
(seen working: mlflow 3.17.2, which serves with uvicorn + FastAPI, 1 worker by default).

The model: the MLP trained here for a few epochs on scikit-learn's digits (seeded; inputs are pixels / 16),
then
- MLflow gets the eager module (``mlflow.pytorch.save_model``, with a float32 signature and an input example:
  MLflow 3's default serialization is ``pt2``, i.e. torch.export), served through its pyfunc flavour by
  ``mlflow models serve --env-manager local`` with its default server and worker count; requests are
  ``{"inputs": [[64 floats]]}``;
- Officina gets the ``torch.jit.trace`` of the same module, registered and deployed through the SDK
  (the REST API), and its serving process (``stack.start("serving")``, the embedded stack as ``officina up``
  runs it); requests are ``POST /v1/deployments/<name>/predict`` ``{"rows": [[64 floats]]}`` with a bearer token;
- the bare baseline is a Flask app of a few lines under gunicorn (gthread, with the worker and thread counts
  of Officina's serving process), whose one route parses ``{"rows": ...}``, runs the same TorchScript file
  and returns the logits: what any Python server must at least do per request.

Officina is measured in variants of the deployment (one stack, one deployment at a time; see
``officina_variant``): ``officina`` = the deployment defaults (max_batch_size 32, max_wait_ms 2, every
prediction logged) on the registered TorchScript file; ``-w0`` max_wait_ms 0 (batch only what is already
queued); ``-nobatch`` max_batch_size 1; ``-nolog`` log_sample 0; ``-onnx`` after the version's ONNX export
(the serving process then loads the export, on ONNX Runtime). The target ratios use ``officina``.

The load generator runs in its own process(es), never in a server's: N threads (the concurrency), each with
one keep-alive HTTP connection (``http.client``), each request one row of the digits test split (request
bodies encoded beforehand), for ``--warmup`` seconds unmeasured and then ``--duration`` seconds measured.
Every response is checked: HTTP 200 and the predicted class equal to the eager model's argmax for that row;
errors and wrong answers are counted (both must be 0). The client's CPU use over the measured window is
printed: near 1.0 core per client process means the (GIL-bound) client itself is the limit, then try
``--client-procs 2``.

On a 2-core machine the client and the server share the two cores: every figure is "client + server on the
same 2 cores", and a faster server leaves the client less CPU. The figures are relative, not capacity.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEAM = "default"
SIZES = (64, 128, 128, 10)


# -- the model ------------------------------------------------------------------------------------------------

def build_mlp():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                               torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
                               torch.nn.Linear(SIZES[2], SIZES[3]))


def train_model(folder: Path, seed: int, epochs: int) -> dict[str, Any]:
    """Train the MLP on digits; write state dict, TorchScript and test rows into ``folder``."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    model = build_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x_te)).numpy()
    predicted = logits.argmax(1)
    torch.save(model.state_dict(), folder / "mlp_state.pt")
    traced = torch.jit.trace(model, torch.from_numpy(x_te[:4]))
    traced.save(str(folder / "mlp.torchscript.pt"))
    np.save(folder / "x_test.npy", x_te)
    np.save(folder / "pred_test.npy", predicted)
    return {"accuracy": float((predicted == y_te).mean()), "test_rows": len(x_te), "x_test": x_te,
            "predicted": predicted, "example": x_te[:5]}


# -- the load generator (its own process) ---------------------------------------------------------------------

def extract_class(payload: Any) -> int:
    """The predicted class from a response body of any of the three servers (logits, probabilities or label)."""
    if isinstance(payload, dict):
        for key in ("predictions", "outputs", "predicted"):
            if key in payload:
                return extract_class(payload[key])
        for key in ("label", "class", "prediction"):
            if key in payload:
                return extract_class(payload[key])
        for key in ("probabilities", "scores", "logits"):
            if key in payload:
                return extract_class(payload[key])
        raise ValueError(f"no prediction in {str(payload)[:200]}")
    if isinstance(payload, list):
        if len(payload) == 1:
            return extract_class(payload[0])
        if all(isinstance(v, (int, float)) for v in payload):
            return max(range(len(payload)), key=payload.__getitem__)
        raise ValueError(f"cannot read a class from {str(payload)[:200]}")
    if isinstance(payload, (int, float)):
        return int(payload)
    if isinstance(payload, str) and payload.lstrip("-").isdigit():
        return int(payload)
    raise ValueError(f"cannot read a class from {str(payload)[:200]}")


def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["threads"]`` keep-alive clients for warm-up + duration; return counts and latencies."""
    import numpy as np

    rows = np.load(spec["x_test"])
    expected = np.load(spec["pred_test"]).tolist()
    key = spec["body_key"]
    bodies = [json.dumps({key: [[float(v) for v in row]]}).encode() for row in rows]
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    host, port, path = spec["host"], spec["port"], spec["path"]
    start = time.monotonic() + 0.2
    measure_from = start + spec["warmup"]
    stop_at = measure_from + spec["duration"]
    lock = threading.Lock()
    results = {"latencies": [], "errors": 0, "wrong": 0, "error_samples": []}

    def worker(index: int) -> None:
        lat: list[float] = []
        errors = wrong = 0
        samples: list[str] = []
        conn = http.client.HTTPConnection(host, port, timeout=30)
        i = (index * 7919) % len(bodies)
        while time.monotonic() < start:
            time.sleep(0.001)
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            body = bodies[i]
            want = expected[i]
            i = (i + 1) % len(bodies)
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                t1 = time.perf_counter()
                ok = resp.status == 200
                if ok:
                    got = extract_class(json.loads(data))
                    if got != want:
                        wrong += now >= measure_from
                        if len(samples) < 3:
                            samples.append(f"wrong: got {got}, expected {want}: {data[:200]!r}")
                elif len(samples) < 3:
                    samples.append(f"HTTP {resp.status}: {data[:300]!r}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                t1 = time.perf_counter()
                ok = False
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            if now >= measure_from and time.monotonic() <= stop_at:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors += 1
        conn.close()
        with lock:
            results["latencies"].extend(lat)
            results["errors"] += errors
            results["wrong"] += wrong
            results["error_samples"].extend(samples)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(spec["threads"])]
    for t in threads:
        t.start()
    while time.monotonic() < measure_from:
        time.sleep(0.01)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while time.monotonic() < stop_at:
        time.sleep(0.01)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.join(timeout=60)
    results["client_cpu"] = ((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)) / spec["duration"]
    results["duration"] = spec["duration"]
    return results


def run_load(target: dict[str, Any], data: Path, concurrency: int, args: argparse.Namespace,
             server_pids: list[int], profile: Path | None = None) -> dict[str, Any]:
    """Start the client process(es) against ``target``; aggregate their results."""
    procs = max(1, min(args.client_procs, concurrency))
    per = [concurrency // procs + (1 if k < concurrency % procs else 0) for k in range(procs)]
    children = []
    for threads in per:
        spec = {**target, "threads": threads, "warmup": args.warmup, "duration": args.duration,
                "x_test": str(data / "x_test.npy"), "pred_test": str(data / "pred_test.npy")}
        children.append(subprocess.Popen([sys.executable, __file__, "--client", json.dumps(spec)],
                                         stdout=subprocess.PIPE, text=True))
    time.sleep(0.2 + args.warmup)
    cpu_a, busy_a = tree_cpu(server_pids), machine_busy()
    spies = []
    if profile is not None:  # py-spy on the server's leaf processes, over the measured window
        profile.mkdir(parents=True, exist_ok=True)
        for pid in leaf_pids(server_pids):
            out = profile / f"{target.get('label', 'server')}-c{concurrency}-pid{pid}.txt"
            spies.append(subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "--duration",
                                           str(max(1, int(args.duration) - 1)), "--format", "raw", "--rate", "200",
                                           *(["--gil"] if args.profile_gil else []), "--nonblocking", "-o", str(out)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(args.duration)
    cpu_b, busy_b = tree_cpu(server_pids), machine_busy()
    for spy in spies:
        spy.wait(timeout=30)
    latencies: list[float] = []
    total = {"errors": 0, "wrong": 0, "error_samples": [], "client_cpu": []}
    for child in children:
        out, _ = child.communicate(timeout=args.duration + args.warmup + 120)
        if child.returncode != 0:
            raise RuntimeError(f"client process failed ({child.returncode})")
        res = json.loads(out.strip().splitlines()[-1])
        latencies.extend(res["latencies"])
        total["errors"] += res["errors"]
        total["wrong"] += res["wrong"]
        total["error_samples"].extend(res["error_samples"])
        total["client_cpu"].append(res["client_cpu"])
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(math.ceil(q * n)) - 1)] * 1000 if n else math.nan

    return {"concurrency": concurrency, "requests": n, "rps": n / args.duration, "p50": pct(0.50),
            "p99": pct(0.99), "errors": total["errors"], "wrong": total["wrong"],
            "error_samples": total["error_samples"][:3], "client_cpu": total["client_cpu"],
            "server_cpu": (cpu_b - cpu_a) / args.duration if cpu_a is not None and cpu_b is not None else math.nan,
            "machine_cpu": (busy_b - busy_a) / args.duration}


# -- processes ------------------------------------------------------------------------------------------------

def tree_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user + system) used so far by ``pids`` and all their descendants (Linux /proc)."""
    if not pids:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def leaf_pids(roots: list[int]) -> list[int]:
    """The processes under ``roots`` (inclusive) that have no children: the ones doing the serving."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    leaves, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if children.get(pid):
            todo.extend(children[pid])
        else:
            leaves.append(pid)
    return sorted(set(leaves))


def machine_busy() -> float:
    """CPU seconds this machine has spent busy (all cores, not idle or iowait) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    sys.path.insert(0, str(HERE))
    from stack import free_port as fp

    return fp()


# -- MLflow ---------------------------------------------------------------------------------------------------

MLFLOW_SAVE = """
import sys, numpy as np, torch, mlflow, mlflow.pytorch
from mlflow.models import infer_signature
folder, out = sys.argv[1], sys.argv[2]
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                            torch.nn.Linear(128, 10))
model.load_state_dict(torch.load(folder + "/mlp_state.pt", weights_only=True))
model.eval()
example = np.load(folder + "/x_test.npy")[:5]
with torch.no_grad():
    signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
mlflow.pytorch.save_model(model, out, signature=signature, input_example=example)
print(mlflow.__version__)
"""


def mlflow_server(args: argparse.Namespace, data: Path, tmp: Path, workers: int) -> tuple[subprocess.Popen, dict, str]:
    python = Path(args.mlflow_venv) / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"no MLflow venv at {args.mlflow_venv} (see the module docstring)")
    model_dir = tmp / "mlflow-model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    out = subprocess.run([str(python), "-c", MLFLOW_SAVE, str(data), str(model_dir)], capture_output=True,
                         text=True, env={**os.environ, "MLFLOW_TRACKING_URI": f"file://{tmp}/mlruns"})
    if out.returncode != 0:
        raise RuntimeError(f"saving the MLflow model failed:\n{out.stderr[-3000:]}")
    version = out.stdout.strip().splitlines()[-1]
    port = free_port()
    log = tmp / "mlflow-serve.log"
    argv = [str(Path(args.mlflow_venv) / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    if workers:
        argv += ["-w", str(workers)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{tmp}/mlruns",  # it runs `uvicorn` from PATH
           "PATH": f"{Path(args.mlflow_venv) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    wait_http(f"http://127.0.0.1:{port}/ping", 120, proc, log)
    config = f"mlflow {version}: `mlflow models serve --env-manager local" + (
        f" -w {workers}` (uvicorn)" if workers else "` (its defaults: uvicorn, 1 worker)")
    return proc, {"host": "127.0.0.1", "port": port, "path": "/invocations", "body_key": "inputs"}, config


# -- the bare Flask + gunicorn baseline -----------------------------------------------------------------------

BARE_APP = '''
import os
import numpy as np
import torch
from flask import Flask, jsonify, request

if int(os.environ.get("BARE_TORCH_THREADS", "0")):
    torch.set_num_threads(int(os.environ["BARE_TORCH_THREADS"]))
model = torch.jit.load(os.environ["BARE_MODEL"], map_location="cpu").eval()
app = Flask(__name__)


@app.post("/predict")
def predict():
    rows = np.asarray(request.get_json()["rows"], dtype=np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(rows)).numpy()
    return jsonify(predictions=out.tolist())
'''


def bare_server(args: argparse.Namespace, data: Path, tmp: Path, workers: int, threads: int,
                torch_threads: int) -> tuple[subprocess.Popen, dict, str]:
    app_dir = tmp / "bare"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    log = tmp / "bare.log"
    gunicorn = Path(sys.executable).parent / "gunicorn"
    argv = [str(gunicorn), "-b", f"127.0.0.1:{port}", "-w", str(workers), "--worker-class", "gthread",
            "--threads", str(threads), "--chdir", str(app_dir), "bare_app:app"]
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "BARE_MODEL": str(data / "mlp.torchscript.pt"),
                                 "BARE_TORCH_THREADS": str(torch_threads)})
    wait_http(f"http://127.0.0.1:{port}/nothing", 60, proc, log)
    config = (f"gunicorn gthread -w {workers} --threads {threads} (as Officina's serving process), Flask route, "
              f"the same TorchScript file (torch threads: {torch_threads or 'its default, as in Officina'})")
    return proc, {"host": "127.0.0.1", "port": port, "path": "/predict", "body_key": "rows"}, config


# -- Officina -------------------------------------------------------------------------------------------------

def officina_register(data: Path, name: str, example) -> int:
    """Register the TorchScript file as a version of model ``name`` (classification, classes 0–9); return
    its version number."""
    import torch

    from officina import sdk
    from officina.sdk.tracking import _signature

    model = torch.jit.load(str(data / "mlp.torchscript.pt"))
    x = torch.from_numpy(example)
    with torch.no_grad():
        signature = _signature(x, model(x), {"task": "classification"})
    return sdk.models.register(name, data / "mlp.torchscript.pt", signature=signature, team=TEAM).version


def officina_variant(label: str, args: argparse.Namespace) -> tuple[int, float, float]:
    """(max_batch_size, max_wait_ms, log_sample) of a server label: ``officina`` is the command line's (by default
    the deployment defaults 32, 2 ms, every prediction logged); suffixes change one each: ``-nobatch`` (batch 1),
    ``-b<N>``, ``-w<ms>`` (e.g. ``-w0``: no waiting, only what is already queued is batched), ``-nolog``
    (log_sample 0), ``-onnx`` (the version's ONNX export, made by a worker, then served by ONNX Runtime: list
    these variants last, as from then on every deployment of the version loads the export)."""
    batch, wait_ms, log_sample = args.batch, args.wait_ms, args.log_sample
    for part in label.split("-")[1:]:
        if part == "nobatch":
            batch = 1
        elif part == "nolog":
            log_sample = 0.0
        elif part == "onnx":
            pass  # the version's ONNX export is made first (the serving process prefers it)
        elif part.startswith("b") and part[1:].isdigit():
            batch = int(part[1:])
        elif part.startswith("w") and part[1:].replace(".", "", 1).isdigit():
            wait_ms = float(part[1:])
        else:
            raise SystemExit(f"unknown server variant {part!r} in {label!r}")
    return batch, wait_ms, log_sample


def officina_deploy(name: str, model: str, version: int, batch: int, wait_ms: float, log_sample: float):
    """Deploy ``model`` version ``version`` as ``name`` (100 % of the traffic); return the SDK's Deployment."""
    from officina import sdk

    return sdk.deployments.create(name, [(model, version, 100)], team=TEAM, max_batch_size=batch,
                                  max_wait_ms=wait_ms, log_sample=log_sample)


def describe(url: str, token: str) -> dict:
    """``GET /v1/deployments/<name>`` of the serving process: what it loaded (runtime, file)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["deployment"]


def wait_predict(url: str, token: str, row: list[float], timeout: float) -> dict:
    body = json.dumps({"rows": [row]}).encode()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not predict within {timeout:g} s: {last}")


# -- report ---------------------------------------------------------------------------------------------------

def fmt_row(label: str, res: dict[int, dict]) -> str:
    cells = []
    for c in sorted(res):
        r = res[c]
        cells.append(f"{r['rps']:10.0f} {r['p50']:7.2f} {r['p99']:7.2f} {r['server_cpu'] / r['rps'] * 1000:6.2f}")
    return f"{label:<18} | " + " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated client thread counts")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="client processes the threads are spread over (if one client saturates a core)")
    parser.add_argument("--servers", default="mlflow,bare,officina,officina-w0,officina-nobatch,officina-nolog,"
                                             "officina-onnx,officina-w0-onnx",
                        help="in this order: mlflow (-w<N>: uvicorn workers), bare (-t<N>: torch threads), officina "
                             "(variants: -nobatch, -b<N>, -w<ms>, -nolog; see officina_variant)")
    parser.add_argument("--mlflow-venv", default=os.environ.get("MLFLOW_VENV", "/work/mlflow-venv"))
    parser.add_argument("--mlflow-workers", type=int, default=0, help="mlflow models serve -w (0: its default)")
    parser.add_argument("--batch", type=int, default=32, help="Officina deployment max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="Officina deployment max_wait_ms")
    parser.add_argument("--log-sample", type=float, default=1.0,
                        help="Officina deployment log_sample (1.0, the default: every prediction logged)")
    parser.add_argument("--serving-processes", type=int, default=0,
                        help="diagnostic: OFFICINA_SERVING_PROCESSES for the stack (0: the default)")
    parser.add_argument("--serving-env", action="append", default=[], metavar="KEY=VALUE",
                        help="diagnostic: an environment variable for the stack's processes (e.g. OMP_NUM_THREADS=1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="diagnostic: py-spy record (raw stacks) of each server at the highest concurrency")
    parser.add_argument("--profile-gil", action="store_true", help="with --profile: only GIL-holding samples")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/work/pyspy-venv/bin/py-spy")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="seconds to wait, before each server's runs, for the machine to be idle (< 0.2 cores "
                             "busy) when other programs use it")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client_main(json.loads(args.client))))
        return
    concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    t_start = time.monotonic()
    print(f"serving bench on {os.cpu_count()} CPUs: client and servers share them "
          f"({args.warmup:g} s warm-up + {args.duration:g} s measured per run, concurrency {concurrency}, "
          f"{args.client_procs} client process(es))", flush=True)

    from officina.platform.settings import Settings

    defaults = Settings()
    serve_workers, serve_threads = args.serving_processes or defaults.serving_processes or 1, defaults.serving_threads
    results: dict[str, dict[int, dict]] = {}
    configs: dict[str, str] = {}
    background: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmpname:
        tmp = Path(tmpname)
        data = tmp / "data"
        data.mkdir()
        model = train_model(data, args.seed, args.epochs)
        print(f"MLP {' → '.join(map(str, SIZES))} trained {args.epochs} epochs on digits: test accuracy "
              f"{model['accuracy']:.4f} over {model['test_rows']} rows (the rows the clients send)", flush=True)

        def measure(label: str, proc_pids: list[int], target: dict) -> None:
            results[label] = {}
            waited = time.monotonic()
            while True:  # a shared machine: wait (up to --quiet-wait s) for other programs to leave the CPUs
                busy0 = machine_busy()
                time.sleep(1.0)
                background[label] = machine_busy() - busy0
                if background[label] <= 0.2 or time.monotonic() - waited >= args.quiet_wait:
                    break
            print(f"  machine CPU busy before the load (server idle, other programs): {background[label]:.2f} cores"
                  + ("  (NOT idle: the figures below share the CPUs with something else)"
                     if background[label] > 0.2 else ""), flush=True)
            for c in concurrency:
                profile = Path(args.profile) if args.profile and c == max(concurrency) else None
                r = run_load({**target, "label": label}, data, c, args, proc_pids, profile)
                results[label][c] = r
                print(f"  {label} c={c}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                      f"{r['errors']} errors, {r['wrong']} wrong; client CPU "
                      f"{'+'.join(f'{x:.2f}' for x in r['client_cpu'])} cores, server CPU {r['server_cpu']:.2f} cores, "
                      f"machine {r['machine_cpu']:.2f} of {os.cpu_count()} cores (rest: "
                      f"{r['machine_cpu'] - r['server_cpu'] - sum(r['client_cpu']):.2f})"
                      + (f"; e.g. {r['error_samples']}" if r["error_samples"] else ""), flush=True)

        for label in [s for s in servers if s.startswith("mlflow")]:
            workers = int(label[len("mlflow-w"):]) if label.startswith("mlflow-w") else args.mlflow_workers
            proc, target, configs[label] = mlflow_server(args, data, tmp, workers)
            try:
                print(f"{configs[label]}", flush=True)
                measure(label, [proc.pid], target)
            finally:
                stop(proc)
        for label in [s for s in servers if s.startswith("bare")]:
            torch_threads = int(label[len("bare-t"):]) if label.startswith("bare-t") else 0
            proc, target, configs[label] = bare_server(args, data, tmp, serve_workers, serve_threads, torch_threads)
            try:
                print(configs[label], flush=True)
                measure(label, [proc.pid], target)
            finally:
                stop(proc)
        ours = [s for s in servers if s.startswith("officina")]
        if ours:
            sys.path.insert(0, str(HERE))
            from officina import sdk
            from stack import embedded

            for item in args.serving_env:  # diagnostics only: the processes inherit this environment
                key, _, value = item.partition("=")
                os.environ[key] = value
            extra = {"serving_processes": args.serving_processes} if args.serving_processes else {}
            with embedded(processes=("web", "worker", "serving"), serving_port=free_port(), **extra) as running:
                sdk.connect(running.url, running.token)
                version = officina_register(data, "bench-mlp", model["example"])
                row = [float(v) for v in model["x_test"][0]]
                settings = running.settings
                pids = serving_pids()
                exported = False
                for label in ours:
                    batch, wait_ms, log_sample = officina_variant(label, args)
                    if "onnx" in label.split("-") and not exported:
                        export = sdk.models.get("bench-mlp", version, team=TEAM).export("onnx", timeout=600)
                        if export["state"] != "succeeded":
                            raise RuntimeError(f"the ONNX export failed: {export}")
                        exported = True
                        print(f"ONNX export: {json.dumps(export.get('report'))[:300]}", flush=True)
                    name = f"bench-mlp-{label}"
                    deployment = officina_deploy(name, "bench-mlp", version, batch, wait_ms, log_sample)
                    first = wait_predict(deployment.url, running.token, row, 120)
                    route = describe(deployment.url.rsplit("/predict", 1)[0], running.token)["routes"][0]
                    configs[label] = (f"officina serving ({settings.serving_processes} process(es) × "
                                      f"{settings.serving_threads} threads), {route['file']} on {route['runtime']}, "
                                      f"max_batch_size {batch}, max_wait_ms {wait_ms:g}, log_sample {log_sample:g}")
                    print(f"{configs[label]}; first answer: {json.dumps(first)[:240]}", flush=True)
                    host, port = deployment.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
                    target = {"host": host, "port": int(port), "path": f"/v1/deployments/{name}/predict",
                              "body_key": "rows", "headers": {"Authorization": f"Bearer {running.token}"}}
                    measure(label, pids, target)
                    deployment.delete()  # its batcher thread stops; the next deployment runs alone

    print()
    print("cpu ms: the server process's CPU time per request (user + system, all its threads; for Officina not\n"
          "counting its Postgres, which writes the prediction log) — less sensitive to other programs than req/s")
    print(f"{'server':<18} | " + " | ".join(f"{'c=' + str(c) + ' req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>6}"
                                            for c in concurrency))
    print("-" * (20 + 37 * len(concurrency)))
    for label in results:
        print(fmt_row(label, results[label]))
    print()
    for label, text in configs.items():
        print(f"  {label}: {text}; machine busy before: {background.get(label, math.nan):.2f} cores")
    print()
    hi, lo = max(concurrency), min(concurrency)
    rows = []
    ours_r, ml, bare = results.get("officina"), results.get("mlflow"), results.get("bare")
    if ours_r and ml:
        ratio = ours_r[hi]["rps"] / ml[hi]["rps"]
        rows.append((f"officina / mlflow req/s at c={hi}", f"{ratio:.2f}×", "≥ 3", ratio >= 3))
        rows.append((f"officina p99 c={hi} vs mlflow p99 c={lo}", f"{ours_r[hi]['p99']:.2f} vs {ml[lo]['p99']:.2f} ms",
                     "lower", ours_r[hi]["p99"] < ml[lo]["p99"]))
        rows.append((f"officina p99 c={lo} vs mlflow p99 c={lo}", f"{ours_r[lo]['p99']:.2f} vs {ml[lo]['p99']:.2f} ms",
                     "lower", ours_r[lo]["p99"] < ml[lo]["p99"]))
    if ours_r and bare:
        ratio = bare[hi]["rps"] / ours_r[hi]["rps"]
        rows.append((f"bare / officina req/s at c={hi}", f"{ratio:.2f}×", "≤ 2", ratio <= 2))
    bad = sum(r[c]["errors"] + r[c]["wrong"] for r in results.values() for c in r)
    rows.append(("errors + wrong predictions, all runs", str(bad), "0", bad == 0))
    for figure, value, target, met in rows:
        print(f"  {figure:<40} {value:>22}   target {target:<6} {'met' if met else 'MISSED'}")
    print(f"\nbench total {time.monotonic() - t_start:.0f} s")


def serving_pids() -> list[int]:
    """PIDs of this bench's serving process(es): descendants of this process running the serving app (other
    programs on the machine may run their own)."""
    parents, cmds = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmds[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, cmd in cmds.items() if "officina.workers.serving" in cmd and ours(pid)]


if __name__ == "__main__":
    main()
