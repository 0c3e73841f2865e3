"""Health of each component (and its failure when Redis stops); migrations are idempotent."""
from __future__ import annotations

import gc
import multiprocessing
import subprocess
import time

import psycopg
import requests


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




def test_healthz_reports_every_component_green(live_stack):
    response = requests.get(f"{live_stack.url}/healthz", timeout=20)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"db", "s3", "broker", "workers"}
    assert all(c["ok"] for c in body["components"].values()), body
    assert "worker" in body["components"]["workers"]["detail"]


def test_healthz_fails_when_redis_is_stopped(live_stack, tmp_path):
    """An app whose broker is a real Redis that then stops answers 503 naming the broker."""
    from officina.infra.embedded import redis_server_binary
    from officina.platform.services import Services
    from officina.web.app import create_app

    port = free_port()
    server = subprocess.Popen([redis_server_binary(),
                               "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                               "--save", ""], stdout=subprocess.DEVNULL)
    try:
        settings = live_stack.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
        for _ in range(50):
            try:
                import redis

                redis.Redis(port=port).ping()
                break
            except Exception:
                time.sleep(0.1)
        services = Services.open(settings, pool_size=2)
        client = create_app(settings, services=services).test_client()
        before = client.get("/healthz").get_json()
        assert before["components"]["broker"]["ok"] is True
        assert before["components"]["db"]["ok"] is True
    finally:
        server.terminate()
        server.wait(10)
    after = client.get("/healthz")
    assert after.status_code == 503
    body = after.get_json()
    assert body["status"] == "degraded"
    assert body["components"]["broker"]["ok"] is False
    assert body["components"]["workers"]["ok"] is False
    assert body["components"]["db"]["ok"] is True and body["components"]["s3"]["ok"] is True
    services.close()
    gc.collect()


def _fresh_database(live_stack, name: str) -> str:
    url = live_stack.settings.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.replace("/officina?", f"/{name}?")


def test_migrations_rerun_is_a_noop(live_stack):
    from officina.platform.db import migrate
    from officina.platform.db.migrations import available

    url = _fresh_database(live_stack, "mig_rerun")
    first = migrate(url)
    assert first == [name for _, name, _ in available()]
    assert migrate(url) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(first)
        assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]


def _migrate_in_process(url: str, queue) -> None:
    from officina.platform.db import migrate

    try:
        queue.put(("ok", migrate(url)))
    except Exception as exc:  # reported to the parent
        queue.put(("error", repr(exc)))


def test_concurrent_migrations_apply_each_once(live_stack):
    url = _fresh_database(live_stack, "mig_race")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_process, args=(url, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(kind == "ok" for kind, _ in results), results
    applied = [names for _, names in results if names]
    assert len(applied) == 1, results  # exactly one process applied the migrations
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == sorted(set(versions)) and versions


def test_ping_task_round_trips_through_a_real_worker(live_stack):
    from officina.platform.tasks import PING

    reply = live_stack.services.celery.send_task(PING, queue="cpu").get(timeout=20)
    assert reply["pong"] is True and reply["worker"].startswith("worker0@")


def test_celery_config_is_json_only_with_late_acks(live_stack):
    conf = live_stack.services.celery.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert sorted(q.name for q in conf.task_queues) == ["cpu", "gpu", "io"]
