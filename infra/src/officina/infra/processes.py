"""Registry of the platform's process types: name -> factory(resolved settings, index) -> spec.

Adding a process type (``scheduler``, ``serving``) is one more entry here; the supervisor and the
stack need no change. Factories get settings whose service URLs are all resolved.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from officina.infra.ports import port_is_free
from officina.infra.supervisor import Child, ProcessSpec
from officina.platform.settings import Settings

ProcessFactory = Callable[[Settings, int], ProcessSpec]

PROCESS_TYPES: dict[str, ProcessFactory] = {}


def register(kind: str) -> Callable[[ProcessFactory], ProcessFactory]:
    """Decorator adding a process type to ``PROCESS_TYPES``."""

    def deco(factory: ProcessFactory) -> ProcessFactory:
        PROCESS_TYPES[kind] = factory
        return factory

    return deco


def process_name(kind: str, index: int) -> str:
    """Supervisor name (and log file stem) of the ``index``-th process of ``kind``: ``web-0``."""
    return f"{kind}-{index}"


def python_program(name: str) -> list[str]:
    """argv prefix for a console script of this environment (``<venv>/bin/<name>``)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", name]


def child_env(settings: Settings) -> dict[str, str]:
    """os.environ plus the resolved settings as ``OFFICINA_*`` (these win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICINA_")}
    env.update(settings.child_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http_responds(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers with any HTTP response (an error status counts)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def log_says_after(text: str, min_age: float = 1.0) -> Callable[[Child], bool]:
    """Readiness: alive for ``min_age`` seconds and ``text`` logged since the latest start."""

    def ready(child: Child) -> bool:
        return time.monotonic() - child.started_at >= min_age and text in child.log_since_start()

    return ready


@register("web")
def web_process(settings: Settings, index: int) -> ProcessSpec:
    host, port = settings.web_host, settings.web_port
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    probe_host = f"[{probe_host}]" if ":" in probe_host else probe_host

    def before_start() -> None:
        if not port_is_free(port, host if host else "0.0.0.0"):
            raise RuntimeError(f"web port {host}:{port} is taken by another program; set OFFICINA_WEB_PORT")

    return ProcessSpec(
        name=process_name("web", index),
        argv=[
            *python_program("gunicorn"), "-b", f"{host}:{port}", "-w", str(settings.web_workers),
            # threads: uploads and long polls wait on S3 and Postgres, not the CPU
            "--worker-class", "gthread", "--threads", str(settings.web_threads),
            # idle keep-alive connections stay open 30 s (gunicorn's 2 s races clients that reuse a connection
            # after a pause: the request is sent as the server closes it)
            "--keep-alive", "30",
            "--graceful-timeout", "10", "--access-logfile", "-", "officina.web.wsgi:app",
        ],
        env=child_env(settings),
        cwd=settings.home,
        ready=lambda _child: http_responds(f"http://{probe_host}:{port}/livez"),
        ready_timeout=60.0,
        stop_signal=signal.SIGTERM,
        stop_grace=15.0,
        before_start=before_start,
    )


@register("worker")
def worker_process(settings: Settings, index: int) -> ProcessSpec:
    return ProcessSpec(
        name=process_name("worker", index),
        argv=[
            *python_program("celery"), "-A", "officina.workers.app", "worker",
            "-Q", settings.worker_queues, "-c", str(settings.worker_concurrency),
            "-n", f"worker{index}@%h", "--loglevel", "INFO",
        ],
        env=child_env(settings),
        cwd=settings.home,
        ready=log_says_after(" ready."),
        ready_timeout=60.0,
        stop_signal=signal.SIGTERM,  # warm shutdown: finishes running tasks
        stop_grace=20.0,
    )


@register("beat")
def beat_process(settings: Settings, index: int) -> ProcessSpec:
    """Celery beat: sends the periodic tasks (one per installation)."""
    schedule = Path(settings.home) / "celerybeat-schedule"
    return ProcessSpec(
        name=process_name("beat", index),
        argv=[*python_program("celery"), "-A", "officina.workers.app", "beat", "--schedule", str(schedule),
              "--loglevel", "INFO"],
        env=child_env(settings),
        cwd=settings.home,
        ready=log_says_after("beat: Starting", min_age=0.5),
        ready_timeout=60.0,
        stop_signal=signal.SIGTERM,
        stop_grace=10.0,
    )


@register("scheduler")
def scheduler_process(settings: Settings, index: int) -> ProcessSpec:
    """The scheduler: one leads (advisory lock), more stand by and take over when it dies."""
    return ProcessSpec(
        name=process_name("scheduler", index),
        argv=[sys.executable, "-m", "officina.workers.scheduler"],
        env=child_env(settings),
        cwd=settings.home,
        ready=log_says_after("officina scheduler ", min_age=0.5),
        ready_timeout=60.0,
        stop_signal=signal.SIGTERM,
        stop_grace=10.0,
    )


@register("serving")
def serving_process(settings: Settings, index: int) -> ProcessSpec:
    """The prediction server: one gunicorn whose ``serving_processes`` workers are the replicas.

    Replicas share the port as gunicorn workers of one master (no SO_REUSEPORT needed); each loads
    the deployed models and batches on its own. gthread: a request mostly waits for its batch.
    """
    host, port = settings.serving_host, settings.serving_port
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    probe_host = f"[{probe_host}]" if ":" in probe_host else probe_host

    def before_start() -> None:
        if not port_is_free(port, host if host else "0.0.0.0"):
            raise RuntimeError(f"serving port {host}:{port} is taken by another program; "
                               "set OFFICINA_SERVING_PORT")

    return ProcessSpec(
        name=process_name("serving", index),
        argv=[
            *python_program("gunicorn"), "-b", f"{host}:{port}", "-w", str(max(1, settings.serving_processes)),
            "--worker-class", "gthread", "--threads", str(settings.serving_threads),
            "--keep-alive", "30", "--graceful-timeout", "10", "--timeout", "120", "officina.workers.serving.wsgi:app",
        ],
        env=child_env(settings),
        cwd=settings.home,
        ready=lambda _child: http_responds(f"http://{probe_host}:{port}/livez"),
        ready_timeout=120.0,
        stop_signal=signal.SIGTERM,
        stop_grace=15.0,
        before_start=before_start,
    )
