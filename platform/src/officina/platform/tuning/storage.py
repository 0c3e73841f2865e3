"""Optuna's storage in the platform's PostgreSQL (schema ``optuna``), one per process."""
from __future__ import annotations

import threading

import psycopg

_LOCK = threading.Lock()
_STORAGES: dict[str, object] = {}
INIT_LOCK = 0x0FF1C1A5075A  # serialises Optuna's first-time table creation across processes


def sqlalchemy_url(database_url: str) -> str:
    """The platform's libpq URL as SQLAlchemy's psycopg URL, with ``search_path=optuna``."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": "-csearch_path=optuna"}).render_as_string(hide_password=False)


def optuna_storage(database_url: str):
    """An ``optuna.storages.RDBStorage`` over the platform's database (tables created once, under a lock)."""
    with _LOCK:
        storage = _STORAGES.get(database_url)
        if storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("CREATE SCHEMA IF NOT EXISTS optuna")
                conn.execute("SELECT pg_advisory_lock(%s)", (INIT_LOCK,))
                try:
                    storage = optuna.storages.RDBStorage(
                        sqlalchemy_url(database_url),
                        engine_kwargs={"pool_size": 2, "max_overflow": 4, "pool_pre_ping": True})
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (INIT_LOCK,))
            _STORAGES[database_url] = storage
        return storage
