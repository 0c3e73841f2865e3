"""Runs one attempt of a job: unpack the code, prepare its environment, run the entrypoint in a
subprocess, stream its output to the job's logs, renew the lease, and enforce cancel and timeout.

The user process runs in its own session (process group), so cancel and timeout kill the whole
tree; it also dies with the worker (PR_SET_PDEATHSIG), so a killed worker leaves nothing running
and the lease expiry hands the job to another worker.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from importlib.metadata import version as package_version
from pathlib import Path

from officina.platform.datasets.archive import iter_archive
from officina.platform.jobs.service import Attempt, JobService
from officina.platform.jobs.lifecycle import Lifecycle
from officina.platform.settings import Settings

logger = logging.getLogger(__name__)

LOG_FLUSH_S = 0.5
LOG_LINE_MAX = 8192
LOG_ARCHIVE_MAX = 16 * 1024 * 1024
KILL_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the worker process dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def kill_tree(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure its group is too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


class _LogSink:
    """Collects output lines from pump threads and writes them to the job's log in batches."""

    def __init__(self, jobs: JobService, job_id: str, attempt: int):
        self.jobs, self.job_id, self.attempt = jobs, job_id, attempt
        self.pending: list[tuple[str, str]] = []
        self.archive: deque[str] = deque()
        self.archived = 0
        self.seq = 0
        self.lock = threading.Lock()

    def add(self, stream: str, line: str) -> None:
        line = line.rstrip("\n")[:LOG_LINE_MAX]
        with self.lock:
            self.pending.append((stream, line))
            text = f"[{stream}] {line}\n" if stream != "stdout" else line + "\n"
            self.archive.append(text)
            self.archived += len(text)
            while self.archived > LOG_ARCHIVE_MAX and self.archive:
                self.archived -= len(self.archive.popleft())

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
            start = self.seq + 1
            self.seq += len(batch)
        if batch:
            try:
                self.jobs.append_logs(self.job_id, self.attempt, start, batch)
            except Exception:  # logs must never kill the job; the archive still has them
                logger.warning("could not store log lines of job %s", self.job_id, exc_info=True)

    def text(self) -> bytes:
        with self.lock:
            return "".join(self.archive).encode("utf-8", "replace")


def _pump(pipe, stream: str, sink: _LogSink) -> None:
    for raw in iter(pipe.readline, b""):
        sink.add(stream, raw.decode("utf-8", "replace"))
    pipe.close()


class JobRunner:
    """Runs attempts on this worker (``worker`` names it in leases and events)."""

    def __init__(self, settings: Settings, jobs: JobService, lifecycle: Lifecycle, worker: str | None = None):
        self.settings, self.jobs, self.lifecycle = settings, jobs, lifecycle
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat_s = max(0.5, min(2.0, settings.job_lease_s / 3))

    def run(self, job_id: str, attempt: int) -> str:
        """Run one attempt to its end; return the state it ended in (or why it did not run)."""
        job = self.lifecycle.claim(job_id, attempt, self.worker)
        if job is None:
            logger.info("job %s attempt %s is not ours to run (fenced out or ended)", job_id, attempt)
            return "skipped"
        sink = _LogSink(self.jobs, job.id, attempt)
        try:
            started = self.jobs.start_attempt(job, api_url=self.settings.url)
        except Exception as exc:
            logger.exception("job %s could not start", job.id)
            self.lifecycle.finish(job.id, attempt, "failed", f"could not start: {exc}")
            return "failed"
        state, reason, code = "failed", "", None
        try:
            workdir = self._workdir(job.id, attempt)
            python = self._prepare(started, workdir, sink)
            state, reason, code = self._execute(started, python, workdir, sink)
        except Exception as exc:  # setup failed: say why in the job, not only in the worker log
            logger.exception("job %s attempt %s failed to run", job.id, attempt)
            sink.add("system", f"officina: {exc}")
            state, reason = "failed", f"the job could not run: {exc}"
        sink.flush()
        ended = state if state not in ("lost", "preempted") else None
        if state == "preempted":
            self.lifecycle.yield_attempt(job.id, attempt)
        elif state != "lost" and not self.lifecycle.finish(job.id, attempt, state, reason, exit_code=code):
            ended = None  # another attempt owns the job now
        try:
            self.jobs.end_attempt(started, ended, sink.text())
        except Exception:
            logger.warning("could not archive the log of job %s", job.id, exc_info=True)
        shutil.rmtree(self._workdir(job.id, attempt), ignore_errors=True)
        return state

    # -- setup -----------------------------------------------------------------------------------------
    def _workdir(self, job_id: str, attempt: int) -> Path:
        return Path(self.settings.home).resolve() / "jobs" / job_id / f"attempt-{attempt}"

    def _prepare(self, started: Attempt, workdir: Path, sink: _LogSink) -> str:
        """Unpack the code bundle; return the Python to run it with (a cached env when it has requirements)."""
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        code = started.job.spec.get("code")
        if not code:
            return sys.executable
        data = self.jobs.code_bytes(code)
        for entry in iter_archive(data, self.jobs.bundle_limits()):
            target = workdir / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with entry.open() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        requirements = workdir / "requirements.txt"
        if requirements.is_file() and requirements.read_text().strip():
            return self._environment(requirements, sink)
        return sys.executable

    def _environment(self, requirements: Path, sink: _LogSink) -> str:
        """A venv over the worker's packages with the bundle's requirements, cached by their hash."""
        digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:24]
        envs = Path(self.settings.home).resolve() / "envs"
        final = envs / digest
        python = final / "bin" / "python"
        envs.mkdir(parents=True, exist_ok=True)
        with open(envs / f"{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if python.exists():
                sink.add("system", f"officina: using cached environment {digest}")
                return str(python)
            sink.add("system", f"officina: installing requirements.txt into environment {digest}")
            building = envs / f"{digest}.building"
            shutil.rmtree(building, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(building)],
                           check=True, capture_output=True)
            # torch and the platform's own pins stay as the worker has them
            pins = building / "pins.txt"
            pins.write_text(f"torch=={package_version('torch')}\n")
            result = subprocess.run([sys.executable, "-m", "pip", "--python", str(building / "bin" / "python"),
                                     "install", "--disable-pip-version-check", "-r", str(requirements),
                                     "-c", str(pins)], capture_output=True, text=True, timeout=1800)
            for line in (result.stdout + result.stderr).splitlines()[-200:]:
                sink.add("system", line)
            if result.returncode != 0:
                shutil.rmtree(building, ignore_errors=True)
                raise RuntimeError("pip could not install requirements.txt (see the log)")
            building.rename(final)
        return str(python)

    def _env(self, started: Attempt) -> dict[str, str]:
        job = started.job
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFICINA_", "CELERY", "AWS_"))}
        env.update(job.spec.get("env") or {})
        env.update({
            "OFFICINA_URL": self.settings.url, "OFFICINA_TOKEN": started.token, "OFFICINA_RUN_ID": started.run_id,
            "OFFICINA_JOB_ID": job.id, "OFFICINA_ATTEMPT": str(job.attempt), "OFFICINA_TEAM": job.team,
            "OFFICINA_PROJECT": job.project, "OFFICINA_PARAMS": json.dumps(job.spec.get("params") or {}),
            "OFFICINA_DATASETS": json.dumps(started.datasets), "PYTHONUNBUFFERED": "1",
            # exactly the GPUs the scheduler leased to this attempt (none for a CPU job)
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, job.gpu_indices or [])) if job.gpus else "",
        })
        return env

    # -- running ---------------------------------------------------------------------------------------
    def _execute(self, started: Attempt, python: str, workdir: Path, sink: _LogSink) -> tuple[str, str, int | None]:
        job = started.job
        spec = job.spec
        if spec.get("trainer"):
            argv = [python, "-u", "-m", f"officina.workers.trainers.{spec['trainer']}"]
        else:
            argv = [python, "-u", spec["entrypoint"]]
        sink.add("system", f"officina: attempt {job.attempt} on {self.worker}: python {' '.join(argv[2:])}")
        proc = subprocess.Popen(argv, cwd=workdir, env=self._env(started), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_die_with_parent)
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, "stdout", sink), daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, "stderr", sink), daemon=True)]
        for t in pumps:
            t.start()
        deadline = time.monotonic() + job.timeout_s
        next_beat = next_flush = time.monotonic()
        outcome: tuple[str, str, int | None] | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if now >= next_flush:
                sink.flush()
                next_flush = now + LOG_FLUSH_S
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                status = self.lifecycle.heartbeat(job.id, job.attempt, self.worker)
                if status == "cancel":
                    sink.add("system", "officina: cancel requested; stopping the process tree")
                    kill_tree(proc)
                    outcome = ("cancelled", "cancelled on request", None)
                    break
                if status == "preempt":
                    grace = self.settings.preempt_grace_s
                    sink.add("system", f"officina: preempted; SIGTERM now, {grace:g} s to checkpoint and exit")
                    kill_tree(proc, grace=grace)
                    outcome = ("preempted", "preempted", None)
                    break
                if status == "lost":
                    sink.add("system", "officina: this attempt lost its lease; stopping")
                    kill_tree(proc)
                    outcome = ("lost", "lease lost", None)
                    break
            if now >= deadline:
                sink.add("system", f"officina: timed out after {job.timeout_s} s; stopping the process tree")
                kill_tree(proc)
                outcome = ("failed", f"timed out after {job.timeout_s} s", None)
                break
            time.sleep(0.1)
        for t in pumps:
            t.join(timeout=5)
        if outcome is not None:
            return outcome
        code = proc.returncode
        # it may have exited because it was told to (run.should_stop()): then it was cancelled or preempted
        status = self.lifecycle.heartbeat(job.id, job.attempt, self.worker)
        if status == "cancel":
            return "cancelled", f"cancelled on request (it stopped itself, exit code {code})", code
        if status == "preempt":
            return "preempted", "preempted", code
        if code == 0:
            return "succeeded", "exited with code 0", 0
        if code < 0:
            return "failed", f"killed by signal {signal.Signals(-code).name}", code
        return "failed", f"exited with code {code}", code
