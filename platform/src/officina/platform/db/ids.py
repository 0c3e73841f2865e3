"""Identifiers in URLs: a malformed one is simply not found (never a database error)."""
from __future__ import annotations

import uuid


def valid_uuid(value: object) -> str | None:
    """``value`` as a canonical UUID string, or None when it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
