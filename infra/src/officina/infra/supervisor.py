"""A small, generic process supervisor.

It knows nothing about Officina: it starts child processes described by ``ProcessSpec``, waits
until each is ready, restarts the ones that crash (with backoff, giving up after repeated quick
crashes) and stops them all in reverse start order, each one bounded in time.

Every child runs in its own session and process group (``start_new_session=True``), so stopping
signals the whole group: the child and anything it started. Its stdout and stderr are appended
to its log file.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

#: A run shorter than this counts as a quick crash.
QUICK_CRASH_S = 30.0
#: Give up restarting a child after this many quick crashes in a row.
MAX_QUICK_CRASHES = 5
#: How long to wait after SIGKILL for the group to disappear.
KILL_WAIT_S = 5.0


class ProcessStartError(RuntimeError):
    """A child exited or timed out before it was ready."""


@dataclass
class ProcessSpec:
    """How to run one supervised child.

    ``ready`` is called with the running ``Child`` (use ``child.log_since_start()`` to look for
    a line the program prints when ready) and returns True once the child serves; exceptions
    count as "not yet". ``before_start`` runs before every start, restarts included.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | str | None = None
    log_path: Path | None = None  # default: <supervisor log dir>/<name>.log
    ready: Callable[[Child], bool] | None = None
    ready_timeout: float = 30.0
    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    restart: bool = True
    user: str | None = None  # run as this OS user (needs root)
    before_start: Callable[[], None] | None = None


@dataclass
class Child:
    """A started child and its restart bookkeeping."""

    spec: ProcessSpec
    log_path: Path
    popen: subprocess.Popen | None = None
    log_offset: int = 0
    started_at: float = 0.0
    quick_crashes: int = 0
    restart_at: float | None = None  # when a crashed child is due to restart
    failed: bool = False  # gave up restarting
    restarts: int = 0
    _log_fh: object | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_since_start(self, max_bytes: int = 1 << 20) -> str:
        """What the child wrote to its log since its latest start."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read(max_bytes).decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])


class Supervisor:
    """Starts, watches and stops child processes."""

    def __init__(
        self,
        log_dir: Path,
        *,
        quick_crash_s: float = QUICK_CRASH_S,
        max_quick_crashes: int = MAX_QUICK_CRASHES,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        state_file: Path | None = None,
    ) -> None:
        """``state_file``, when given, records the live children (pid, start time) so that a
        later supervisor can ``reap_leftovers`` of one that was killed without stopping them."""
        self.log_dir = Path(log_dir)
        self.state_file = Path(state_file) if state_file is not None else None
        self.quick_crash_s = quick_crash_s
        self.max_quick_crashes = max_quick_crashes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._children: list[Child] = []
        self._lock = threading.RLock()
        self._stopping = False

    # ----------------------------------------------------------------- queries
    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def get(self, name: str) -> Child:
        for child in self._children:
            if child.name == name:
                return child
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(c.name == name for c in self._children)

    # ------------------------------------------------------------------ start
    def start(self, spec: ProcessSpec) -> Child:
        """Launch ``spec`` and wait until it is ready; raise ``ProcessStartError`` if it is not."""
        with self._lock:
            if spec.name in self:
                raise ValueError(f"a process named {spec.name!r} is already supervised")
            self._stopping = False
            log_path = spec.log_path or self.log_dir / f"{spec.name}.log"
            child = Child(spec=spec, log_path=Path(log_path))
            self._launch(child)
            self._children.append(child)
        try:
            self._wait_ready(child)
        except BaseException:
            with self._lock:
                self._terminate(child)
                if child in self._children:
                    self._children.remove(child)
                self._save_state()
            raise
        return child

    def _launch(self, child: Child) -> None:
        spec = child.spec
        if spec.before_start is not None:
            spec.before_start()
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(child.log_path, "ab")  # noqa: SIM115 - kept open while the child runs
        log_fh.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: starting {spec.name}\n".encode()
        )
        log_fh.flush()
        child.log_offset = log_fh.tell()
        try:
            child.popen = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                user=spec.user,
                group=_primary_group(spec.user),
                extra_groups=[] if spec.user is not None else None,
            )
        except BaseException:
            log_fh.close()
            raise
        if child._log_fh is not None:
            child._log_fh.close()  # type: ignore[attr-defined]
        child._log_fh = log_fh
        child.started_at = time.monotonic()
        child.restart_at = None
        self._save_state(extra=child)
        logger.info("started %s (pid %d), log %s", spec.name, child.popen.pid, child.log_path)

    def _wait_ready(self, child: Child) -> None:
        spec = child.spec
        deadline = time.monotonic() + spec.ready_timeout
        delay = 0.05
        while True:
            assert child.popen is not None
            code = child.popen.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{spec.name} exited with status {code} before it was ready; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )
            if self._stopping:
                raise ProcessStartError(f"{spec.name}: supervisor is stopping")
            if spec.ready is None:
                return
            try:
                if spec.ready(child):
                    logger.info(
                        "%s ready after %.2f s", spec.name, time.monotonic() - child.started_at
                    )
                    return
            except Exception as exc:  # noqa: BLE001 - a failing probe means "not yet"
                logger.debug("%s readiness probe: %s", spec.name, exc)
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{spec.name} was not ready within {spec.ready_timeout:.0f} s; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -------------------------------------------------------------- supervise
    def check(self) -> None:
        """Restart children that exited (once their backoff has passed). Call periodically."""
        with self._lock:
            if self._stopping:
                return
            now = time.monotonic()
            for child in list(self._children):
                if self._stopping or child not in self._children:
                    return  # stop_all ran meanwhile (e.g. from a signal handler)
                if child.failed or not child.spec.restart or child.popen is None:
                    continue
                if child.restart_at is None:
                    code = child.popen.poll()
                    if code is None:
                        continue
                    self._on_exit(child, code, now)
                if child.restart_at is not None and now >= child.restart_at:
                    self._restart(child)
                    if self._stopping or child not in self._children:
                        self._terminate(child)  # stopped while it restarted
                        return
                    now = time.monotonic()

    def _on_exit(self, child: Child, code: int, now: float) -> None:
        ran = now - child.started_at
        _kill_group(child, signal.SIGKILL)  # whatever it left behind
        _wait_group_gone(child, KILL_WAIT_S)
        if ran < self.quick_crash_s:
            child.quick_crashes += 1
        else:
            child.quick_crashes = 1
        if child.quick_crashes > self.max_quick_crashes:
            child.failed = True
            logger.error(
                "%s exited with status %s %d times in a row within %.0f s of starting; "
                "giving up restarting it. Last lines of %s:\n%s",
                child.name, code, child.quick_crashes,
                self.quick_crash_s, child.log_path, child.log_tail(),
            )
            return
        delay = min(self.backoff_base * 2 ** (child.quick_crashes - 1), self.backoff_max)
        child.restart_at = now + delay
        logger.warning(
            "%s exited with status %s after %.1f s; restarting in %.1f s",
            child.name, code, ran, delay,
        )

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        try:
            self._launch(child)
            self._wait_ready(child)
        except Exception as exc:  # noqa: BLE001 - count it as a crash and retry later
            logger.warning("restart of %s failed: %s", child.name, exc)
            if child.popen is not None and child.popen.poll() is None:
                self._terminate(child)
            code = child.popen.returncode if child.popen is not None else None
            self._on_exit(child, code if code is not None else -1, time.monotonic())

    def supervise(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Block, restarting crashed children, until ``stop`` is set."""
        while not stop.wait(interval):
            self.check()

    # ------------------------------------------------------------------- stop
    def stop(self, name: str) -> None:
        """Stop one child (bounded) and forget it."""
        with self._lock:
            child = self.get(name)
            self._terminate(child)
            self._children.remove(child)
            self._save_state()

    def stop_all(self) -> None:
        """Stop every child in reverse start order; bounded, idempotent, never raises."""
        self._stopping = True  # before taking the lock: makes a pending readiness wait give up
        with self._lock:
            self._stopping = True
            while self._children:
                child = self._children[-1]
                try:
                    self._terminate(child)
                except Exception:  # keep stopping the others
                    logger.exception("stopping %s failed", child.name)
                if self._children and self._children[-1] is child:
                    self._children.pop()
            self._save_state()

    def _terminate(self, child: Child) -> None:
        """Stop signal to the group, wait ``stop_grace``, then SIGKILL; wait until none is left."""
        spec = child.spec
        if child.popen is None:
            return
        t0 = time.monotonic()
        if _group_alive(child):
            logger.info("stopping %s (pid %d)", spec.name, child.popen.pid)
            _kill_group(child, spec.stop_signal)
            if not _wait_group_gone(child, spec.stop_grace):
                logger.warning(
                    "%s still running %.0f s after %s; killing it",
                    spec.name, spec.stop_grace, signal.Signals(spec.stop_signal).name,
                )
                _kill_group(child, signal.SIGKILL)
                if not _wait_group_gone(child, KILL_WAIT_S):
                    logger.error("%s: processes of its group survived SIGKILL", spec.name)
            logger.info("stopped %s in %.2f s", spec.name, time.monotonic() - t0)
        child.popen.poll()
        if child._log_fh is not None:
            child._log_fh.close()  # type: ignore[attr-defined]
            child._log_fh = None


    def _save_state(self, extra: Child | None = None) -> None:
        if self.state_file is None:
            return
        state = {}
        for child in [*self._children, *([extra] if extra is not None else [])]:
            if child.popen is None or child.popen.poll() is not None:
                continue
            try:
                created = psutil.Process(child.popen.pid).create_time()
            except psutil.Error:
                continue
            state[child.name] = {"pid": child.popen.pid, "create_time": created}
        try:
            if not state:
                self.state_file.unlink(missing_ok=True)
                return
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            logger.warning("could not write %s: %s", self.state_file, exc)


def reap_leftovers(state_file: Path, grace: float = 5.0) -> list[str]:
    """Stop the sessions a previous supervisor recorded in ``state_file`` and left running
    (it was SIGKILLed, say). Returns their names. Call only while no supervisor uses the file."""
    try:
        state = json.loads(Path(state_file).read_text())
    except (FileNotFoundError, ValueError):
        return []
    reaped = []
    for name, entry in state.items():
        try:
            proc = psutil.Process(entry["pid"])
            if abs(proc.create_time() - entry["create_time"]) > 0.01:
                continue  # the pid was reused by something else
        except (psutil.Error, KeyError, TypeError):
            continue
        sid = entry["pid"]
        logger.warning("stopping %s (pid %d) left running by a previous supervisor", name, sid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
            for pid in _session_members(sid):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait
            while _session_members(sid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _session_members(sid):
                break
        reaped.append(name)
    Path(state_file).unlink(missing_ok=True)
    return reaped


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def _kill_group(child: Child, sig: int) -> None:
    """Signal the child's process group and any process that left it but kept its session."""
    assert child.popen is not None
    pgid = child.popen.pid  # start_new_session: pgid == sid == pid
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in _session_members(pgid):
        try:
            os.kill(proc, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _group_alive(child: Child) -> bool:
    """Whether any live process of the child's session (its group included) remains.

    ``killpg(pgid, 0)`` is not enough: it succeeds on zombies, and PID 1 of a container may
    never reap orphans, so members are listed and zombies ignored.
    """
    assert child.popen is not None
    child.popen.poll()  # reap the leader so it does not linger as a zombie
    return bool(_session_members(child.popen.pid))


def _wait_group_gone(child: Child, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if not _group_alive(child):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
