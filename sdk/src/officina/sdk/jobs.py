"""Jobs: ``sdk.submit(entrypoint="train.py", code_dir=".", params=…)`` returns a ``Job`` to follow."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.errors import InvalidRequest, NotFound, OfficinaError

ENDED = ("succeeded", "failed", "cancelled")
MAX_BUNDLE = 50 * 1024 * 1024
ALWAYS_SKIPPED = (".git/", "__pycache__/", ".venv/", "venv/", ".mypy_cache/", ".pytest_cache/", ".ipynb_checkpoints/")
MAX_DIFF = 512 * 1024


class JobFailed(OfficinaError):
    """``Job.wait(raise_on_failure=True)`` found the job failed or cancelled."""


def _team(team: str | None) -> str:
    from officina.sdk.teams import resolve

    return resolve(team)


def _ignore_spec(root: Path):
    import pathspec

    lines = []
    gitignore = root / ".gitignore"
    if gitignore.is_file():
        lines = gitignore.read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def pack(code_dir: str | os.PathLike, *, max_bytes: int = MAX_BUNDLE) -> tuple[str, bytes, list[str]]:
    """A deterministic .tar.gz of ``code_dir`` honouring its .gitignore: (sha256, bytes, paths).

    Raises:
        InvalidRequest: a link pointing outside the directory, or a bundle over ``max_bytes``.
    """
    root = Path(code_dir).resolve()
    if not root.is_dir():
        raise InvalidRequest(f"code_dir {str(code_dir)!r} is not a directory")
    spec = _ignore_spec(root)
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not any((rel_dir + d + "/").startswith(s) or
                                                            (rel_dir + d + "/").endswith("/" + s)
                                                            for s in ALWAYS_SKIPPED)
                             and not spec.match_file(rel_dir + d + "/"))
        for name in sorted(filenames):
            rel = rel_dir + name
            if spec.match_file(rel) or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if root not in target.parents:
                    raise InvalidRequest(f"{rel} links outside the code directory (to {target}); "
                                         "copy the file in or list it in .gitignore")
            if path.is_file():
                files.append((rel, path))
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        total = 0
        for rel, path in files:
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes * 4:
                break
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if len(data) > max_bytes or total > max_bytes * 4:
        raise InvalidRequest(f"the code directory packs to more than {max_bytes // 2**20} MiB; keep data out of it "
                             "(list it in .gitignore) and load it as a dataset")
    return hashlib.sha256(data).hexdigest(), data, [rel for rel, _ in files]


def git_info(code_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Commit, dirty flag and diff when ``code_dir`` is inside a git work tree (None otherwise)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(code_dir), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    status = git("status", "--porcelain").strip()
    diff = git("diff", "HEAD") if status else ""
    return {"commit": commit, "dirty": bool(status), "diff": diff[:MAX_DIFF], "diff_truncated": len(diff) > MAX_DIFF}


class Job:
    """A submitted job: ``status``, ``wait()``, ``logs(follow=True)``, ``run``, ``cancel()``."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<Job {self.id[:8]} {self.data.get('name')} {self.data.get('state')}>"

    def refresh(self) -> "Job":
        self.data = sdk.client().get(f"/jobs/{self.id}")["job"]
        return self

    @property
    def status(self) -> str:
        """The job's state now: queued, admitted, running, retrying, succeeded, failed or cancelled."""
        return self.refresh().data["state"]

    @property
    def reason(self) -> str:
        return self.data.get("reason", "")

    @property
    def run_id(self) -> str | None:
        return self.data.get("run_id") or self.refresh().data.get("run_id")

    @property
    def run(self):
        """The job's tracked run (parameters, metrics, artifacts), once the job has started."""
        run_id = self.run_id
        if run_id is None:
            return None
        from officina.sdk import tracking

        return tracking.get_run(run_id)

    def wait(self, timeout: float | None = None, *, poll: float = 1.0, raise_on_failure: bool = False) -> "Job":
        """Block until the job ends (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.data['state']} after {timeout} s")
            time.sleep(poll)
        if raise_on_failure and self.data["state"] != "succeeded":
            raise JobFailed(f"job {self.id} {self.data['state']}: {self.reason}")
        return self

    def events(self) -> list[dict[str, Any]]:
        return sdk.client().get(f"/jobs/{self.id}/events")["events"]

    def logs(self, follow: bool = False, *, attempt: int | None = None, poll: float = 0.5) -> Iterator[str]:
        """The log lines of the current (or given) attempt; ``follow`` keeps reading until the job ends."""
        after = 0
        while True:
            query = f"?after={after}" + (f"&attempt={attempt}" if attempt else "")
            body = sdk.client().get(f"/jobs/{self.id}/logs{query}")
            for line in body["lines"]:
                yield line["line"]
            after = body["next"]
            if attempt is None:
                attempt = body["attempt"]
            if not follow or (body["done"] and not body["lines"]):
                return
            if not body["lines"]:
                time.sleep(poll)

    def cancel(self) -> "Job":
        """Ask for the job to stop; a running job's whole process tree is killed."""
        self.data = sdk.client().post(f"/jobs/{self.id}/cancel")["job"]
        return self


def submit(entrypoint: str | None = None, code_dir: str | os.PathLike = ".", params: dict | None = None,
           datasets: dict[str, str] | None = None, gpus: int = 0, cpus: float = 1, memory: str = "4Gi",
           queue: str | None = None, priority: str = "normal", name: str | None = None, max_retries: int = 2,
           timeout: str | int = "2h", *, trainer: str | None = None, dataset: str | None = None,
           project: str | None = None, team: str | None = None, env: dict[str, str] | None = None) -> Job:
    """Submit code (``entrypoint`` in ``code_dir``) or a built-in ``trainer`` as a job; return the Job.

    ``datasets`` maps names to ``"dataset:version"`` (version defaults to latest); a trainer takes
    ``dataset=`` as its training data.
    """
    team = _team(team)
    body = job_body(entrypoint, code_dir, params, datasets, gpus, cpus, memory, queue, priority, name, max_retries,
                    timeout, trainer=trainer, dataset=dataset, project=project, team=team, env=env)
    return Job(sdk.client().post(f"/teams/{quote(team, safe='')}/jobs", body)["job"])


def job_body(entrypoint: str | None = None, code_dir: str | os.PathLike = ".", params: dict | None = None,
             datasets: dict[str, str] | None = None, gpus: int = 0, cpus: float = 1, memory: str = "4Gi",
             queue: str | None = None, priority: str = "normal", name: str | None = None, max_retries: int = 2,
             timeout: str | int = "2h", *, trainer: str | None = None, dataset: str | None = None,
             project: str | None = None, team: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON body of a job (the code directory packed and uploaded once, by hash)."""
    datasets = dict(datasets or {})
    if dataset is not None:
        datasets.setdefault("train", dataset)
    body: dict[str, Any] = {"params": params or {}, "datasets": datasets, "gpus": gpus, "cpus": cpus,
                            "memory": memory, "queue": queue, "priority": priority, "name": name,
                            "max_retries": max_retries, "timeout": timeout, "project": project or "default",
                            "env": env or {}}
    if trainer is not None:
        if entrypoint is not None:
            raise InvalidRequest("give either a trainer or an entrypoint, not both")
        body["trainer"] = trainer
    else:
        if entrypoint is None:
            raise InvalidRequest("entrypoint is required (the script to run, e.g. 'train.py'), or name a trainer")
        sha, data, paths = pack(code_dir)
        if entrypoint not in paths:
            raise InvalidRequest(f"entrypoint {entrypoint!r} is not in {str(code_dir)!r} (or it is ignored)")
        path = f"/teams/{quote(team, safe='')}/code/{sha}"
        try:
            sdk.client().request_raw("HEAD", path)
        except NotFound:
            sdk.client().request("PUT", path, data=data, headers={"Content-Type": "application/gzip"})
        body.update(entrypoint=entrypoint, code=sha, git=git_info(code_dir))
    return {k: v for k, v in body.items() if v is not None}


def get(job_id: str) -> Job:
    return Job(sdk.client().get(f"/jobs/{quote(job_id, safe='')}")["job"])


def list(team: str | None = None, *, state: str | None = None, project: str | None = None) -> list[Job]:  # noqa: A001
    query = "&".join(f"{k}={quote(v)}" for k, v in (("state", state), ("project", project)) if v)
    body = sdk.client().get(f"/teams/{quote(_team(team), safe='')}/jobs" + (f"?{query}" if query else ""))
    return [Job(j) for j in body["jobs"]]

