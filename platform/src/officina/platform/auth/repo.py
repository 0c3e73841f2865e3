"""SQL of the auth area. Functions take a connection and never open one."""
from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.auth.entities import ApiToken, Membership, Team, User
from officina.platform.errors import Conflict

_USER_COLS = "id, username, email, display_name, is_admin, disabled, created_at"
_TOKEN_COLS = "id, user_id, name, prefix, scope, created_at, expires_at, revoked_at, last_used_at"


def count_users(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM users").fetchone()[0]


def insert_user(conn, *, username: str, password_hash: str | None, is_admin: bool,
                email: str | None = None, display_name: str | None = None) -> User:
    try:
        with conn.cursor(row_factory=class_row(User)) as cur:
            cur.execute(
                f"INSERT INTO users (username, password_hash, is_admin, email, display_name)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {_USER_COLS}",
                (username, password_hash, is_admin, email, display_name),
            )
            return cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a user named {username!r} already exists", username="taken") from None


def get_user(conn, user_id: int) -> User | None:
    with conn.cursor(row_factory=class_row(User)) as cur:
        return cur.execute(f"SELECT {_USER_COLS} FROM users WHERE id = %s", (user_id,)).fetchone()


def get_user_by_name(conn, username: str) -> User | None:
    with conn.cursor(row_factory=class_row(User)) as cur:
        return cur.execute(f"SELECT {_USER_COLS} FROM users WHERE username = %s", (username,)).fetchone()


def get_password_hash(conn, user_id: int) -> str | None:
    row = conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,)).fetchone()
    return row[0] if row else None


def set_password_hash(conn, user_id: int, password_hash: str) -> None:
    conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))


def set_user_flags(conn, user_id: int, *, is_admin: bool | None = None, disabled: bool | None = None) -> None:
    conn.execute(
        "UPDATE users SET is_admin = coalesce(%s, is_admin), disabled = coalesce(%s, disabled) WHERE id = %s",
        (is_admin, disabled, user_id),
    )


def list_users(conn) -> list[User]:
    with conn.cursor(row_factory=class_row(User)) as cur:
        return cur.execute(f"SELECT {_USER_COLS} FROM users ORDER BY username").fetchall()


def insert_team(conn, name: str, description: str = "") -> Team:
    try:
        with conn.cursor(row_factory=class_row(Team)) as cur:
            cur.execute(
                "INSERT INTO teams (name, description) VALUES (%s, %s)"
                " RETURNING id, name, description, created_at",
                (name, description),
            )
            return cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a team named {name!r} already exists", name="taken") from None


def get_team_by_name(conn, name: str) -> Team | None:
    with conn.cursor(row_factory=class_row(Team)) as cur:
        return cur.execute(
            "SELECT id, name, description, created_at FROM teams WHERE name = %s", (name,)
        ).fetchone()


def list_teams(conn, user_id: int | None = None) -> list[Team]:
    """All teams, or only those ``user_id`` belongs to."""
    with conn.cursor(row_factory=class_row(Team)) as cur:
        if user_id is None:
            return cur.execute("SELECT id, name, description, created_at FROM teams ORDER BY name").fetchall()
        return cur.execute(
            "SELECT t.id, t.name, t.description, t.created_at FROM teams t"
            " JOIN memberships m ON m.team_id = t.id WHERE m.user_id = %s ORDER BY t.name",
            (user_id,),
        ).fetchall()


def upsert_membership(conn, team_id: int, user_id: int, role: str) -> None:
    conn.execute(
        "INSERT INTO memberships (team_id, user_id, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        (team_id, user_id, role),
    )


def delete_membership(conn, team_id: int, user_id: int) -> bool:
    return conn.execute(
        "DELETE FROM memberships WHERE team_id = %s AND user_id = %s", (team_id, user_id)
    ).rowcount > 0


def count_team_admins(conn, team_id: int) -> int:
    return conn.execute(
        "SELECT count(*) FROM memberships WHERE team_id = %s AND role = 'admin'", (team_id,)
    ).fetchone()[0]


def list_members(conn, team_id: int) -> list[Membership]:
    with conn.cursor(row_factory=class_row(Membership)) as cur:
        return cur.execute(
            "SELECT m.team_id, t.name AS team_name, m.user_id, u.username, m.role, m.created_at"
            " FROM memberships m JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id"
            " WHERE m.team_id = %s ORDER BY u.username",
            (team_id,),
        ).fetchall()


def roles_of(conn, user_id: int) -> dict[int, str]:
    return dict(conn.execute("SELECT team_id, role FROM memberships WHERE user_id = %s", (user_id,)).fetchall())


def insert_token(conn, *, user_id: int, name: str, prefix: str, token_hash: bytes,
                 scope: dict, expires_at: datetime | None) -> ApiToken:
    with conn.cursor(row_factory=class_row(ApiToken)) as cur:
        return cur.execute(
            f"INSERT INTO api_tokens (user_id, name, prefix, token_hash, scope, expires_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_TOKEN_COLS}",
            (user_id, name, prefix, token_hash, Jsonb(scope), expires_at),
        ).fetchone()


def find_token_by_hash(conn, token_hash: bytes) -> ApiToken | None:
    with conn.cursor(row_factory=class_row(ApiToken)) as cur:
        return cur.execute(
            f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE token_hash = %s", (token_hash,)
        ).fetchone()


def touch_token(conn, token_id: int) -> None:
    """Record use, at most once a minute per token so reads stay cheap."""
    conn.execute(
        "UPDATE api_tokens SET last_used_at = now() WHERE id = %s"
        " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (token_id,),
    )


def list_tokens(conn, user_id: int) -> list[ApiToken]:
    with conn.cursor(row_factory=class_row(ApiToken)) as cur:
        return cur.execute(
            f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE user_id = %s ORDER BY created_at DESC, id DESC",
            (user_id,),
        ).fetchall()


def get_token(conn, token_id: int) -> ApiToken | None:
    with conn.cursor(row_factory=class_row(ApiToken)) as cur:
        return cur.execute(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = %s", (token_id,)).fetchone()


def revoke_token(conn, token_id: int) -> None:
    conn.execute(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s", (token_id,)
    )


def insert_audit(conn, *, actor_id: int | None, action: str, target: str, detail: dict) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor_id, action, target, detail) VALUES (%s, %s, %s, %s)",
        (actor_id, action, target, Jsonb(detail)),
    )
