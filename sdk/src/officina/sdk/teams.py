"""Teams and members: ``sdk.teams.list()``, ``.create()``, ``.members()``, ``.set_member()``."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from officina import sdk


def list() -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.teams.list()
    return sdk.client().get("/teams")["teams"]


def get(name: str) -> dict[str, Any]:
    return sdk.client().get(f"/teams/{quote(name, safe='')}")


def create(name: str, description: str = "") -> dict[str, Any]:
    return sdk.client().post("/teams", {"name": name, "description": description})["team"]


def members(name: str) -> list[dict[str, Any]]:
    return sdk.client().get(f"/teams/{quote(name, safe='')}/members")["members"]


def set_member(name: str, username: str, role: str) -> dict[str, Any]:
    return sdk.client().put(f"/teams/{quote(name, safe='')}/members/{quote(username, safe='')}",
                            {"role": role})["member"]


def remove_member(name: str, username: str) -> None:
    sdk.client().delete(f"/teams/{quote(name, safe='')}/members/{quote(username, safe='')}")
