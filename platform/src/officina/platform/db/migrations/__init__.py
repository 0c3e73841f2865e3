"""Versioned schema migrations: ``NNNN_name.sql`` files applied in order, each once.

``migrate`` takes a transaction-scoped advisory lock, so processes starting at once apply each
migration exactly once; the others wait and then find nothing left to do.
"""
from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x0FF1C1A  # advisory lock id reserved for migrations
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    """All migrations shipped with this version as (number, name, sql), in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied to the database at ``url``; return their names."""
    applied_now: list[str] = []
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for number, name, sql in available():
            if number in done:
                continue
            logger.info("applying migration %s", name)
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name)
            )
            applied_now.append(name)
    return applied_now


def current_version(conn: psycopg.Connection) -> int | None:
    """Highest applied migration number, or None on an empty database."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    return conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
