"""`officina up` as a user runs it: start, healthy, Ctrl-C leaves nothing behind, restart keeps data."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

OFFICINA = str(Path(sys.executable).parent / "officina")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Up:
    """One `officina up` process with its output collected."""

    def __init__(self, home: Path, port: int, extra_env: dict | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICINA_")}
        env.update(OFFICINA_HOME=str(home), OFFICINA_WEB_PORT=str(port), OFFICINA_WEB_WORKERS="1",
                   OFFICINA_WORKER_CONCURRENCY="1", **(extra_env or {}))
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([OFFICINA, "up"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def wait_running(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "Officina is running" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"officina up did not start:\n{self.text()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 90) -> float:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout)
        return time.monotonic() - start


def _processes_under(home: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(home) in cmdline or str(home) in (proc.info["cwd"] or ""):
                found.append(f"{proc.info['pid']}: {cmdline[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _wait_healthy(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{url}/healthz", timeout=15)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.5)


def test_up_serves_stops_clean_and_keeps_data(tmp_path):
    home = tmp_path / "home"
    port = _free_port()
    first = Up(home, port)
    try:
        first.wait_running()
        password = re.search(r"password: (\S+)", first.text()).group(1)
        assert (home / "initial-admin-password").read_text().strip() == password
        assert oct((home / "initial-admin-password").stat().st_mode & 0o777) == "0o600"
        health = _wait_healthy(first.url)
        assert health["status"] == "ok", health
        beat_log = home / "logs" / "beat-0.log"
        assert beat_log.exists() and "beat: Starting" in beat_log.read_text()  # periodic GC is scheduled
        login = requests.post(f"{first.url}/api/v1/auth/login",
                              json={"username": "admin", "password": password}, timeout=10)
        assert login.status_code == 201
        token = login.json()["token"]
        second = subprocess.run([OFFICINA, "up"], env={**os.environ, "OFFICINA_HOME": str(home),
                                                       "OFFICINA_WEB_PORT": str(_free_port())},
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "already" in (second.stdout + second.stderr).lower()
    finally:
        took = first.stop()
    assert first.proc.returncode == 0, first.text()
    assert "Officina stopped." in first.text()
    assert took < 60
    assert _processes_under(home) == []

    again = Up(home, port)
    try:
        again.wait_running()
        assert "First start" not in again.text()
        me = requests.get(f"{again.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["user"]["username"] == "admin"
        relogin = requests.post(f"{again.url}/api/v1/auth/login",
                                json={"username": "admin", "password": password}, timeout=10)
        assert relogin.status_code == 201
    finally:
        again.stop()
    assert _processes_under(home) == []


def _system_services() -> tuple[str, str] | None:
    try:
        import psycopg
        import redis

        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2).close()
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except Exception:
        return None
    return "postgresql://postgres@127.0.0.1:5432/postgres", "redis://127.0.0.1:6379/13"


def test_up_uses_external_services_where_configured(tmp_path):
    services = _system_services()
    if services is None:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 to use as external services")
    import psycopg

    admin_url, broker = services
    name = f"officina_ext_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    home = tmp_path / "home"
    up = Up(home, _free_port(), {"OFFICINA_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
                                  "OFFICINA_BROKER_URL": broker})
    try:
        up.wait_running()
        health = _wait_healthy(up.url)
        assert health["status"] == "ok", health
        assert not (home / "pg").exists() and not (home / "redis").exists()
        assert (home / "s3").exists()  # S3 was not configured, so the embedded one runs
        started = " ".join(_processes_under(home))
        assert "postgres" not in started and "redis-server" not in started
    finally:
        up.stop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
