"""Teams and members: ``sdk.teams.list()``, ``.create()``, ``.members()``, ``.set_member()``."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.errors import InvalidRequest


def resolve(team: str | None) -> str:
    """The given team, else ``OFFICINA_TEAM`` (set inside jobs), else the caller's only team."""
    if team:
        return team
    if os.environ.get("OFFICINA_TEAM"):
        return os.environ["OFFICINA_TEAM"]
    teams = [t["name"] for t in sdk.whoami()["teams"]]
    if len(teams) != 1:
        raise InvalidRequest(f"you belong to {len(teams)} teams; pass team= (one of: {', '.join(teams)})")
    return teams[0]


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
