"""PostgreSQL access: the connection pool and schema migrations."""
from officina.platform.db.migrations import migrate
from officina.platform.db.pool import open_pool

__all__ = ["migrate", "open_pool"]
