"""Benchmark: submit → entrypoint running, with a warm worker (issue 4 target: p50 under 1 s).

Run: .venv/bin/python bench/bench_submit_latency.py [--jobs N]. Starts the embedded stack in a
temp dir, submits one warm-up job, then N jobs one after another. Each job's script prints the
wall-clock time it started; latency = that time minus the moment before ``sdk.submit`` was
called (packing, upload dedup, submit, admission, dispatch, claim, setup, interpreter start).
The peer figure is the same script started directly with ``subprocess`` on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "import time\nprint('started', repr(time.time()), flush=True)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    from officina import sdk
    from stack import embedded

    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "start.py").write_text(SCRIPT)
        with embedded(worker_concurrency=2) as running:
            sdk.connect(running.url, running.token)
            sdk.submit("start.py", code_dir=code, team="default").wait(timeout=120)  # warm-up
            ours = []
            for _ in range(args.jobs):
                t0 = time.time()
                job = sdk.submit("start.py", code_dir=code, team="default")
                job.wait(timeout=60, poll=0.05)
                started = next(float(line.split()[1]) for line in job.logs() if line.startswith("started"))
                ours.append(started - t0)
        bare = []
        for _ in range(args.jobs):
            t0 = time.time()
            out = subprocess.run([sys.executable, str(code / "start.py")], capture_output=True, text=True).stdout
            bare.append(float(out.split()[1]) - t0)

    def fmt(values: list[float]) -> str:
        values = sorted(values)
        return (f"p50 {statistics.median(values) * 1000:7.1f} ms   p90 {values[int(0.9 * (len(values) - 1))] * 1000:7.1f} ms"
                f"   max {values[-1] * 1000:7.1f} ms")

    print(f"submit → running over {args.jobs} jobs (target p50 < 1000 ms)")
    print(f"  officina sdk.submit : {fmt(ours)}")
    print(f"  bare subprocess     : {fmt(bare)}   (the interpreter start alone)")


if __name__ == "__main__":
    main()
