"""Plain records of the auth area; rows never leave the repository as anything else."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class Role(str, Enum):
    """A member's role in a team: admins manage members, members write, viewers read."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Action(str, Enum):
    """What a caller wants to do to a team's resources."""

    READ = "read"
    WRITE = "write"
    MANAGE = "manage"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str | None
    display_name: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class Membership:
    team_id: int
    team_name: str
    user_id: int
    username: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    scope: dict
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request: a user, their roles, and the token used, if any."""

    user: User
    roles: dict[int, str] = field(default_factory=dict)  # team id -> role
    token_id: int | None = None
    scope: dict = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def role_in(self, team_id: int) -> str | None:
        """The caller's role in a team, or None when not a member."""
        return self.roles.get(team_id)
