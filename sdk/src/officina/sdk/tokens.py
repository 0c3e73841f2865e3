"""API tokens of the caller: ``sdk.tokens.create()``, ``.list()``, ``.revoke(id)``."""
from __future__ import annotations

from typing import Any

from officina import sdk


def create(name: str = "api", expires_in_days: float | None = None) -> dict[str, Any]:
    """Create a token; the result's ``token`` is the plaintext, shown only now."""
    return sdk.client().post("/tokens", {"name": name, "expires_in_days": expires_in_days})


def list() -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.tokens.list()
    return sdk.client().get("/tokens")["tokens"]


def revoke(token_id: int) -> dict[str, Any]:
    return sdk.client().delete(f"/tokens/{int(token_id)}")["token_info"]
