"""The psycopg connection pool every process opens once."""
from __future__ import annotations

import logging

from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)


def open_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> ConnectionPool:
    """Open a pool on ``url``, waiting until one connection works.

    Raises:
        psycopg_pool.PoolTimeout: when the database cannot be reached within ``timeout``.
    """
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=ConnectionPool.check_connection,
        kwargs={"autocommit": True},
        name="officina",
    )
    pool.open(wait=True, timeout=timeout)
    return pool

