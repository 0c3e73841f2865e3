"""Auth services: accounts, teams and memberships, login, API tokens, first-start bootstrap."""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg_pool import ConnectionPool

from officina.platform.auth import repo
from officina.platform.auth.access import authorize, require_site_admin
from officina.platform.auth.entities import Action, ApiToken, Membership, Principal, Role, Team, User
from officina.platform.errors import Conflict, Invalid, NotFound, Unauthenticated

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "off_"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,62}$")
TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("officina-timing-equaliser")


def hash_token(token: str) -> bytes:
    """SHA-256 of a token: tokens carry 256 random bits, so a fast hash is the right one."""
    return hashlib.sha256(token.encode()).digest()


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise Invalid(
            "username must be 2-63 characters: lowercase letters, digits, '.', '_' or '-'",
            username="invalid",
        )
    return username


def validate_team_name(name: object) -> str:
    if not isinstance(name, str) or not TEAM_NAME.match(name):
        raise Invalid("team name must be 2-63 characters: lowercase letters, digits, '_' or '-'", name="invalid")
    return name


def validate_role(role: object) -> str:
    values = [r.value for r in Role]
    if role not in values:
        raise Invalid(f"role must be one of {', '.join(values)}", role="invalid")
    return str(role)


def validate_password(password: object) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise Invalid(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", password="invalid")
    return password


def generate_password() -> str:
    """A password to hand out once: 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


class AuthService:
    """Accounts, teams, tokens and login over one connection pool."""

    def __init__(self, pool: ConnectionPool, *, token_ttl_days: int = 90):
        self.pool = pool
        self.token_ttl_days = token_ttl_days

    # -- users -------------------------------------------------------------------------
    def create_user(self, username: str, password: str | None = None, *, is_admin: bool = False,
                    team: str | None = None, role: str = Role.MEMBER.value,
                    email: str | None = None, actor: Principal | None = None) -> tuple[User, str | None]:
        """Create a user (optionally joining ``team`` with ``role``); returns the user and the
        generated password when none was given."""
        if actor is not None:
            require_site_admin(actor)
        validate_username(username)
        generated = None
        if password is None:
            password = generated = generate_password()
        validate_password(password)
        validate_role(role)
        if email is not None and (not isinstance(email, str) or "@" not in email or len(email) > 254):
            raise Invalid("email must be an address like name@example.org", email="invalid")
        with self.pool.connection() as conn, conn.transaction():
            target_team = None
            if team is not None:
                target_team = repo.get_team_by_name(conn, team)
                if target_team is None:
                    raise NotFound(f"team {team!r} not found", team="unknown")
            user = repo.insert_user(conn, username=username, password_hash=_hasher.hash(password),
                                    is_admin=is_admin, email=email)
            if target_team is not None:
                repo.upsert_membership(conn, target_team.id, user.id, role)
            repo.insert_audit(conn, actor_id=actor.user.id if actor else None, action="user.create",
                              target=f"user:{username}", detail={"is_admin": is_admin, "team": team})
        return user, generated

    def list_users(self, actor: Principal) -> list[User]:
        require_site_admin(actor)
        with self.pool.connection() as conn:
            return repo.list_users(conn)

    def get_user(self, username: str) -> User:
        with self.pool.connection() as conn:
            user = repo.get_user_by_name(conn, username)
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return user

    def set_password(self, username: str, password: str, *, actor: Principal | None = None) -> None:
        """Set a user's password (themselves, an admin, or ops from the CLI when actor is None)."""
        validate_password(password)
        if actor is not None and actor.user.username != username:
            require_site_admin(actor)
        with self.pool.connection() as conn, conn.transaction():
            user = repo.get_user_by_name(conn, username)
            if user is None:
                raise NotFound(f"user {username!r} not found")
            repo.set_password_hash(conn, user.id, _hasher.hash(password))
            repo.insert_audit(conn, actor_id=actor.user.id if actor else None,
                              action="user.set_password", target=f"user:{username}", detail={})

    # -- login and principals ----------------------------------------------------------
    def authenticate_password(self, username: str, password: str) -> User:
        """Check a username and password; the same error for an unknown user and a wrong password.

        Raises:
            Unauthenticated: unknown user, wrong password, or disabled account.
        """
        failure = Unauthenticated("wrong username or password")
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise failure
        with self.pool.connection() as conn:
            user = repo.get_user_by_name(conn, username)
            stored = repo.get_password_hash(conn, user.id) if user else None
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise failure from None
        if user is None or stored is None:
            raise failure
        if user.disabled:
            raise Unauthenticated("this account is disabled")
        if _hasher.check_needs_rehash(stored):
            with self.pool.connection() as conn:
                repo.set_password_hash(conn, user.id, _hasher.hash(password))
        return user

    def principal_for_user(self, user_id: int) -> Principal:
        """The principal of a console session.

        Raises:
            Unauthenticated: the user no longer exists or is disabled.
        """
        with self.pool.connection() as conn:
            user = repo.get_user(conn, user_id)
            if user is None or user.disabled:
                raise Unauthenticated("your session has ended; log in again")
            return Principal(user=user, roles=repo.roles_of(conn, user.id))

    def authenticate_token(self, token: str) -> Principal:
        """The principal of a bearer token.

        Raises:
            Unauthenticated: unknown, revoked or expired token, or disabled user.
        """
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthenticated("invalid API token")
        with self.pool.connection() as conn:
            record = repo.find_token_by_hash(conn, hash_token(token))
            if record is None:
                raise Unauthenticated("invalid API token")
            if record.revoked_at is not None:
                raise Unauthenticated("this API token has been revoked")
            if record.expires_at is not None and record.expires_at <= datetime.now(timezone.utc):
                raise Unauthenticated("this API token has expired")
            user = repo.get_user(conn, record.user_id)
            if user is None or user.disabled:
                raise Unauthenticated("this account is disabled")
            repo.touch_token(conn, record.id)
            return Principal(user=user, roles=repo.roles_of(conn, user.id),
                             token_id=record.id, scope=dict(record.scope))

    # -- tokens ------------------------------------------------------------------------
    def create_token(self, user_id: int, name: str = "api", *, expires_in_days: float | None = None,
                     scope: dict | None = None) -> tuple[ApiToken, str]:
        """Create a token; the plaintext is returned once and only its hash is stored."""
        if not isinstance(name, str) or not (1 <= len(name.strip()) <= 100):
            raise Invalid("token name must be 1-100 characters", name="invalid")
        if expires_in_days is not None:
            if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, (int, float)) \
                    or not (0 < expires_in_days <= 3650):
                raise Invalid("expires_in_days must be a number between 0 and 3650", expires_in_days="invalid")
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = None
        if expires_in_days is not None:
            expires_at = datetime.now(timezone.utc) + timedelta(days=expires_in_days)
        with self.pool.connection() as conn, conn.transaction():
            if repo.get_user(conn, user_id) is None:
                raise NotFound("user not found")
            record = repo.insert_token(conn, user_id=user_id, name=name.strip(), prefix=plaintext[:10],
                                       token_hash=hash_token(plaintext), scope=scope or {},
                                       expires_at=expires_at)
        return record, plaintext

    def login_token(self, username: str, password: str, name: str = "sdk login") -> tuple[ApiToken, str]:
        """Exchange a username and password for a new API token that expires."""
        user = self.authenticate_password(username, password)
        return self.create_token(user.id, name, expires_in_days=self.token_ttl_days)

    def list_tokens(self, principal: Principal) -> list[ApiToken]:
        with self.pool.connection() as conn:
            return repo.list_tokens(conn, principal.user.id)

    def revoke_token(self, principal: Principal, token_id: int) -> ApiToken:
        """Revoke one of the caller's tokens (admins may revoke anyone's)."""
        with self.pool.connection() as conn, conn.transaction():
            record = repo.get_token(conn, token_id)
            if record is None or (record.user_id != principal.user.id and not principal.is_admin):
                raise NotFound(f"token {token_id} not found")
            repo.revoke_token(conn, token_id)
            repo.insert_audit(conn, actor_id=principal.user.id, action="token.revoke",
                              target=f"token:{token_id}", detail={})
            return repo.get_token(conn, token_id)

    # -- teams -------------------------------------------------------------------------
    def create_team(self, actor: Principal | None, name: str, description: str = "") -> Team:
        """Create a team (admins only); the creating admin becomes its admin."""
        if actor is not None:
            require_site_admin(actor)
        validate_team_name(name)
        if not isinstance(description, str) or len(description) > 2000:
            raise Invalid("description must be text of at most 2000 characters", description="invalid")
        with self.pool.connection() as conn, conn.transaction():
            team = repo.insert_team(conn, name, description)
            if actor is not None:
                repo.upsert_membership(conn, team.id, actor.user.id, Role.ADMIN.value)
            repo.insert_audit(conn, actor_id=actor.user.id if actor else None, action="team.create",
                              target=f"team:{name}", detail={})
        return team

    def list_teams(self, principal: Principal) -> list[Team]:
        """Teams the caller can see: all for admins, their own otherwise."""
        with self.pool.connection() as conn:
            return repo.list_teams(conn, None if principal.is_admin else principal.user.id)

    def team(self, principal: Principal, name: str, action: Action = Action.READ) -> Team:
        """Look a team up by name and check the caller may perform ``action`` on it."""
        with self.pool.connection() as conn:
            team = repo.get_team_by_name(conn, name) if isinstance(name, str) else None
        if team is None:
            raise NotFound(f"team {name!r} not found")
        authorize(principal, team, action)
        return team

    def list_members(self, principal: Principal, team_name: str) -> list[Membership]:
        team = self.team(principal, team_name, Action.READ)
        with self.pool.connection() as conn:
            return repo.list_members(conn, team.id)

    def set_member(self, principal: Principal | None, team_name: str, username: str, role: str) -> Membership:
        """Add a user to a team or change their role (team admins and site admins)."""
        validate_role(role)
        with self.pool.connection() as conn, conn.transaction():
            team = repo.get_team_by_name(conn, team_name)
            if team is None:
                raise NotFound(f"team {team_name!r} not found")
            if principal is not None:
                authorize(principal, team, Action.MANAGE)
            user = repo.get_user_by_name(conn, username) if isinstance(username, str) else None
            if user is None:
                raise NotFound(f"user {username!r} not found", username="unknown")
            current = dict((m.user_id, m.role) for m in repo.list_members(conn, team.id))
            if current.get(user.id) == Role.ADMIN.value and role != Role.ADMIN.value \
                    and repo.count_team_admins(conn, team.id) <= 1:
                raise Conflict(f"{username!r} is the last admin of team {team_name!r}")
            repo.upsert_membership(conn, team.id, user.id, role)
            repo.insert_audit(conn, actor_id=principal.user.id if principal else None,
                              action="team.set_member", target=f"team:{team_name}",
                              detail={"user": username, "old": current.get(user.id), "new": role})
            return next(m for m in repo.list_members(conn, team.id) if m.user_id == user.id)

    def remove_member(self, principal: Principal, team_name: str, username: str) -> None:
        with self.pool.connection() as conn, conn.transaction():
            team = repo.get_team_by_name(conn, team_name)
            if team is None:
                raise NotFound(f"team {team_name!r} not found")
            authorize(principal, team, Action.MANAGE)
            user = repo.get_user_by_name(conn, username) if isinstance(username, str) else None
            members = {m.user_id: m.role for m in repo.list_members(conn, team.id)}
            if user is None or user.id not in members:
                raise NotFound(f"{username!r} is not a member of team {team_name!r}")
            if members[user.id] == Role.ADMIN.value and repo.count_team_admins(conn, team.id) <= 1:
                raise Conflict(f"{username!r} is the last admin of team {team_name!r}")
            repo.delete_membership(conn, team.id, user.id)
            repo.insert_audit(conn, actor_id=principal.user.id, action="team.remove_member",
                              target=f"team:{team_name}", detail={"user": username})

    # -- first start -------------------------------------------------------------------
    def bootstrap_admin(self, username: str = "admin", team: str = "default") -> str | None:
        """On an empty installation create an admin and a first team; return the admin's
        generated password, or None when users already exist."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
            if repo.count_users(conn) > 0:
                return None
            password = generate_password()
            user = repo.insert_user(conn, username=username, password_hash=_hasher.hash(password), is_admin=True)
            first = repo.get_team_by_name(conn, team) or repo.insert_team(conn, team, "The first team")
            repo.upsert_membership(conn, first.id, user.id, Role.ADMIN.value)
            repo.insert_audit(conn, actor_id=None, action="bootstrap", target=f"user:{username}", detail={})
        logger.info("bootstrapped admin user=%s team=%s", username, team)
        return password

