"""The local stack: embedded services where no URL is configured, plus platform processes.

Files under the data dir (``home``):

- ``run/stack.lock``: held (flock) while a stack runs on this home; a second one refuses;
- ``run/ports.json``: the embedded services' ports, reused across restarts while free;
- ``run/endpoints.json``: the resolved service URLs (no secrets) while the stack runs;
- ``run/children.json``: live children, so that a stack killed hard is cleaned up next start;
- ``logs/<name>.log``: each child's stdout and stderr (``postgres``, ``s3``, ``redis``,
  ``web-0``, ``worker-0``...).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from officina.infra import embedded
from officina.infra.ports import PortFile
from officina.infra.processes import PROCESS_TYPES
from officina.infra.supervisor import Child, Supervisor, reap_leftovers
from officina.platform.errors import Conflict
from officina.platform.storage import ObjectStore
from officina.platform.settings import Settings, load_local_secrets, with_secrets

logger = logging.getLogger(__name__)

SERVICES = ("postgres", "s3", "redis")


class StackAlreadyRunning(Conflict):
    """Another stack holds this data dir."""


def _run_dir(home: Path) -> Path:
    return home / "run"


def _lock_path(home: Path) -> Path:
    return _run_dir(home) / "stack.lock"


def _endpoints_path(home: Path) -> Path:
    return _run_dir(home) / "endpoints.json"


def _lock_is_held(home: Path) -> bool:
    path = _lock_path(home)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing releases a lock we may have taken
    return False


def read_running_endpoints(home: Path) -> dict | None:
    """The endpoints of the stack running on ``home`` (``database_url``, ``s3_endpoint``,
    ``broker_url``, ``pid``, and ``url`` once a web process runs), or None when none runs."""
    home = Path(home).expanduser().resolve()
    try:
        data = json.loads(_endpoints_path(home).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not _lock_is_held(home):
        return None  # left over by a stack that was killed
    return data


class Stack:
    """Embedded services and platform processes of one data dir, under one supervisor."""

    def __init__(self, settings: Settings) -> None:
        home = Path(settings.home).expanduser().resolve()
        self.home = home
        self.settings = settings.model_copy(update={"home": home})
        self.supervisor = Supervisor(home / "logs", state_file=_run_dir(home) / "children.json")
        self._lock_fd: int | None = None
        self._endpoints: dict = {}
        self._publish = False
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------------ lock
    def _acquire_lock(self) -> None:
        if self._lock_fd is not None:
            return
        run = _run_dir(self.home)
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(_lock_path(self.home), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = _lock_path(self.home).read_text().strip() or "?"
            except OSError:
                holder = "?"
            raise StackAlreadyRunning(
                f"another Officina stack (pid {holder}) is already running on {self.home}; "
                "stop it first or use another OFFICINA_HOME",
                home=str(self.home),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -------------------------------------------------------------- services
    def start_services(self, services: Collection[str] = SERVICES, *, publish: bool = True) -> Settings:
        """Start the embedded services whose URL is unset (among ``services``), wait until they
        serve, create the database and bucket; return (and keep in ``self.settings``) the
        settings with every URL, the S3 keys and an absolute home filled in.

        ``publish`` writes ``run/endpoints.json`` for other commands to find this stack."""
        t0 = time.monotonic()
        self._acquire_lock()
        try:
            reaped = reap_leftovers(self.supervisor.state_file)  # type: ignore[arg-type]
            if reaped:
                logger.warning("stopped leftovers of a previous stack: %s", ", ".join(reaped))
            _endpoints_path(self.home).unlink(missing_ok=True)
            self.settings = self._start_services(services)
            self._publish = publish
            if publish:
                self._write_endpoints()
        except BaseException:
            self.stop()
            raise
        logger.info("services ready in %.1f s", time.monotonic() - t0)
        return self.settings

    def _start_services(self, services: Collection[str]) -> Settings:
        s = self.settings
        home = self.home
        logs = home / "logs"
        update: dict = {}
        ports = PortFile(_run_dir(home) / "ports.json")

        s3_thread: threading.Thread | None = None
        s3_error: list[BaseException] = []
        if "s3" in services and s.s3_endpoint is None:
            secrets = load_local_secrets(home)
            s3_ports = ports.get(embedded.S3_PORT_NAMES)
            spec = embedded.s3_spec(
                home, s3_ports, secrets["s3_access_key"], secrets["s3_secret_key"], s.s3_bucket, logs
            )

            def start_s3() -> None:
                try:
                    self.supervisor.start(spec)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    s3_error.append(exc)

            # the slowest to get ready (~3 s): start it first, in parallel with the others
            s3_thread = threading.Thread(target=start_s3, name="start-s3", daemon=True)
            s3_thread.start()
            update.update(
                s3_endpoint=f"127.0.0.1:{s3_ports['s3']}",
                s3_access_key=SecretStr(secrets["s3_access_key"]),
                s3_secret_key=SecretStr(secrets["s3_secret_key"]),
                s3_secure=False,
                s3_region=None,
            )
        try:
            if "postgres" in services and s.database_url is None:
                layout = embedded.prepare_postgres(home)
                self.supervisor.start(embedded.postgres_spec(layout, logs))
                embedded.create_database(layout)
                update["database_url"] = layout.url()
            if "redis" in services and s.broker_url is None:
                port = ports.get(["redis"])["redis"]
                self.supervisor.start(embedded.redis_spec(home, port, logs))
                update["broker_url"] = embedded.redis_url(port)
        finally:
            if s3_thread is not None:
                s3_thread.join()
        if s3_error:
            raise s3_error[0]
        if "s3" in services and s.s3_endpoint is not None:
            self._ensure_external_bucket(s)
        resolved = s.model_copy(update=update)
        return with_secrets(resolved)

    @staticmethod
    def _ensure_external_bucket(s: Settings) -> None:
        if s.s3_access_key is None or s.s3_secret_key is None:
            return
        try:
            ObjectStore.from_settings(s, timeout=5, read_timeout=5, retries=False).ensure_bucket()
        except Exception as exc:  # noqa: BLE001 - the platform reports S3 trouble itself
            logger.warning("could not check bucket %s on %s: %s", s.s3_bucket, s.s3_endpoint, exc)

    def _write_endpoints(self, **extra: str) -> None:
        s = self.settings
        self._endpoints.update(
            database_url=s.database_url, s3_endpoint=s.s3_endpoint, broker_url=s.broker_url,
            pid=os.getpid(), **extra,
        )
        path = _endpoints_path(self.home)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._endpoints, indent=2))
        os.replace(tmp, path)

    # ------------------------------------------------------------- processes
    def start(self, kind: str, index: int = 0) -> Child:
        """Start process ``kind`` (a key of ``PROCESS_TYPES``) with the resolved settings."""
        if self._lock_fd is None:
            raise RuntimeError("call start_services() before start()")
        try:
            factory = PROCESS_TYPES[kind]
        except KeyError:
            raise ValueError(f"unknown process type {kind!r}; known: {sorted(PROCESS_TYPES)}") from None
        child = self.supervisor.start(factory(self.settings, index))
        if kind == "web" and self._publish:
            self._write_endpoints(url=self.settings.url)
        return child

    def supervise(self, stop: threading.Event) -> None:
        """Block, restarting crashed children, until ``stop`` is set."""
        self.supervisor.supervise(stop)

    def stop(self) -> None:
        """Stop every child (reverse start order), remove endpoints.json, release the lock.
        Bounded by the children's stop graces; idempotent."""
        with self._stop_lock:
            t0 = time.monotonic()
            had_children = bool(self.supervisor.children)
            try:
                self.supervisor.stop_all()
            finally:
                if self._lock_fd is not None:
                    _endpoints_path(self.home).unlink(missing_ok=True)
                    self._endpoints = {}
                self._release_lock()
            if had_children:
                logger.info("stack stopped in %.1f s", time.monotonic() - t0)

    def __enter__(self) -> Stack:
        self.start_services()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def database_url(settings: Settings, wait: float = 60.0) -> Iterator[str]:
    """A URL of this installation's database, for one-off commands.

    ``settings.database_url`` if set; else that of the stack running on ``settings.home``; else
    the embedded PostgreSQL, started for the duration of the block.
    """
    if settings.database_url:
        yield settings.database_url
        return
    home = Path(settings.home).expanduser().resolve()
    deadline = time.monotonic() + wait
    while True:
        running = read_running_endpoints(home)
        if running and running.get("database_url"):
            yield running["database_url"]
            return
        stack = Stack(settings)
        try:
            stack.start_services(services=("postgres",), publish=False)
        except StackAlreadyRunning:
            # a stack is starting (no endpoints yet) or another command holds the database
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
            continue
        try:
            assert stack.settings.database_url is not None
            yield stack.settings.database_url
        finally:
            stack.stop()
        return
