"""Login, whoami, API tokens and user administration."""
from __future__ import annotations

from flask import Blueprint, jsonify

from officina.web.auth import current_principal, services
from officina.web.inputs import field, json_body
from officina.web.serialize import to_json

bp = Blueprint("accounts", __name__)


def _principal_json(principal) -> dict:
    teams = services().auth.list_teams(principal)
    return {
        "user": to_json(principal.user),
        "teams": [{"name": t.name, "role": principal.role_in(t.id) or ("admin" if principal.is_admin else None)}
                  for t in teams],
        "token": {"id": principal.token_id, "scope": principal.scope} if principal.token_id else None,
    }


@bp.post("/auth/login")
def login():
    """Exchange a username and password for an API token (shown once)."""
    data = json_body(required=("username", "password"), optional=("token_name",))
    record, token = services().auth.login_token(
        field(data, "username", str), field(data, "password", str),
        field(data, "token_name", str, "sdk login"),
    )
    return jsonify(token=token, token_info=to_json(record)), 201


@bp.get("/whoami")
def whoami():
    """The caller: user, teams with roles, and the token in use."""
    return jsonify(_principal_json(current_principal()))


@bp.get("/tokens")
def list_tokens():
    return jsonify(tokens=to_json(services().auth.list_tokens(current_principal())))


@bp.post("/tokens")
def create_token():
    """Create an API token for the caller; the plaintext is in this response only."""
    principal = current_principal()
    data = json_body(optional=("name", "expires_in_days"))
    record, token = services().auth.create_token(
        principal.user.id, field(data, "name", str, "api"),
        expires_in_days=field(data, "expires_in_days", (int, float, type(None)), None),
    )
    return jsonify(token=token, token_info=to_json(record)), 201


@bp.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int):
    record = services().auth.revoke_token(current_principal(), token_id)
    return jsonify(token_info=to_json(record))


@bp.get("/users")
def list_users():
    return jsonify(users=to_json(services().auth.list_users(current_principal())))


@bp.post("/users")
def create_user():
    """Create a user (admins); a generated password is in this response only."""
    principal = current_principal()
    data = json_body(required=("username",), optional=("password", "is_admin", "team", "role", "email"))
    user, generated = services().auth.create_user(
        field(data, "username", str),
        field(data, "password", (str, type(None)), None),
        is_admin=field(data, "is_admin", bool, False),
        team=field(data, "team", (str, type(None)), None),
        role=field(data, "role", str, "member"),
        email=field(data, "email", (str, type(None)), None),
        actor=principal,
    )
    return jsonify(user=to_json(user), password=generated), 201
