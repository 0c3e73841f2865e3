"""The embedded stack with real PostgreSQL, SeaweedFS and Redis processes."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from officina.infra import processes
from officina.infra.ports import pick_free_port
from officina.infra.stack import Stack, StackAlreadyRunning, database_url, read_running_endpoints
from officina.infra.supervisor import ProcessSpec
from officina.platform.settings import Settings
from officina.platform.storage import ObjectStore

def _processes_under(home: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        cwd = p.info["cwd"] or ""
        if str(home) in cmd or cwd.startswith(str(home)):
            found.append(f"{p.pid} {cwd} {cmd[:120]}")
    return found


def _s3(settings: Settings) -> ObjectStore:
    return ObjectStore.from_settings(settings, timeout=5, read_timeout=5, retries=False)


@pytest.mark.slow
def test_stack_start_use_stop_restart_keeps_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, _env_file=None)
    stack = Stack(settings)

    t0 = time.monotonic()
    s = stack.start_services()
    started = time.monotonic() - t0
    try:
        assert s.home == home.resolve() and s.database_url and s.s3_endpoint and s.broker_url
        assert "officina" in s.database_url
        with psycopg.connect(s.database_url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            conn.execute("create table kept (v text)")
            conn.execute("insert into kept values ('hello')")
        _s3(s).put_bytes("dir/obj.txt", b"payload")
        r = redis.Redis.from_url(s.broker_url)
        assert r.ping()
        r.set("k", "v")
        r.close()

        running = read_running_endpoints(home)
        assert running is not None
        assert running["database_url"] == s.database_url and running["broker_url"] == s.broker_url
        assert "secret" not in (home / "run" / "endpoints.json").read_text().lower()
        with pytest.raises(StackAlreadyRunning):
            Stack(settings).start_services()
        with database_url(settings) as url:  # finds the running stack
            assert url == s.database_url

        # a crashed postgres is restarted by supervise()
        stop = threading.Event()
        loop = threading.Thread(target=stack.supervise, args=(stop,))
        loop.start()
        pg = stack.supervisor.get("postgres")
        old_pid = pg.pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (pg.pid == old_pid or not pg.alive()):
            time.sleep(0.1)
        stop.set()
        loop.join()
        with psycopg.connect(s.database_url) as conn:
            assert conn.execute("select v from kept").fetchone() == ("hello",)
    finally:
        t0 = time.monotonic()
        stack.stop()
        stopped = time.monotonic() - t0
    stack.stop()  # idempotent
    print(f"\nfirst start {started:.1f} s, stop {stopped:.1f} s")
    assert _processes_under(home.resolve()) == []
    assert read_running_endpoints(home) is None
    assert not (home / "run" / "endpoints.json").exists()
    ports = (home / "run" / "ports.json").read_text()

    stack2 = Stack(settings)
    t0 = time.monotonic()
    s2 = stack2.start_services()
    restarted = time.monotonic() - t0
    try:
        assert (home / "run" / "ports.json").read_text() == ports
        assert s2.s3_endpoint == s.s3_endpoint
        with psycopg.connect(s2.database_url) as conn:
            assert conn.execute("select v from kept").fetchone() == ("hello",)
        assert _s3(s2).get_bytes("dir/obj.txt") == b"payload"
        r = redis.Redis.from_url(s2.broker_url)
        assert r.get("k") == b"v"
        r.close()
    finally:
        t0 = time.monotonic()
        stack2.stop()
        stopped2 = time.monotonic() - t0
    print(f"restart {restarted:.1f} s, stop {stopped2:.1f} s")
    assert _processes_under(home.resolve()) == []


def test_database_url_starts_postgres_temporarily(tmp_path: Path) -> None:
    home = tmp_path / "h"
    settings = Settings(home=home, _env_file=None)
    with database_url(settings) as url:
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("officina",)
        assert read_running_endpoints(home) is None  # a temporary server is not published
    assert _processes_under(home.resolve()) == []
    with database_url(settings.model_copy(update={"database_url": "postgresql://x/y"})) as url:
        assert url == "postgresql://x/y"


def test_registered_process_type_runs_with_resolved_settings(tmp_path: Path) -> None:
    """A process type added to the registry runs under the stack (a stand-in web server)."""
    home = tmp_path / "h"
    port = pick_free_port()
    settings = Settings(home=home, web_port=port, s3_endpoint="127.0.0.1:1", broker_url="redis://127.0.0.1:1/0",
                        _env_file=None)

    def standin(resolved: Settings, index: int) -> ProcessSpec:
        code = (
            "import http.server, os, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(os.environ['OFFICINA_DATABASE_URL'].encode())\n"
            f"http.server.HTTPServer(('127.0.0.1', {resolved.web_port}), H).serve_forever()\n"
        )
        return ProcessSpec(
            name=processes.process_name("standin", index), argv=[sys.executable, "-c", code],
            env=processes.child_env(resolved), cwd=resolved.home, stop_grace=2,
            ready=lambda c: processes.http_responds(f"http://127.0.0.1:{resolved.web_port}/healthz"),
        )

    processes.PROCESS_TYPES["standin"] = standin
    try:
        with Stack(settings) as stack:
            stack.start("standin")
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read().decode()
            assert body == stack.settings.database_url
            assert (home / "logs" / "standin-0.log").exists()
            with pytest.raises(ValueError, match="unknown process type"):
                stack.start("nope")
    finally:
        del processes.PROCESS_TYPES["standin"]
    assert _processes_under(home.resolve()) == []


def test_registry_has_web_and_worker(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, database_url="postgresql://x/y", s3_endpoint="h:1",
                 broker_url="redis://h:1/0", _env_file=None)
    web = processes.PROCESS_TYPES["web"](s, 0)
    assert web.name == "web-0" and "officina.web.wsgi:app" in web.argv
    assert web.env["OFFICINA_DATABASE_URL"] == "postgresql://x/y"
    worker = processes.PROCESS_TYPES["worker"](s, 1)
    assert worker.name == "worker-1" and "worker1@%h" in worker.argv and "officina.workers.app" in worker.argv
