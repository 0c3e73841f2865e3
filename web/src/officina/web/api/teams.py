"""Teams and their members."""
from __future__ import annotations

from flask import Blueprint, jsonify

from officina.web.auth import current_principal, services
from officina.web.inputs import field, json_body
from officina.web.serialize import to_json

bp = Blueprint("teams", __name__, url_prefix="/teams")


@bp.get("")
def list_teams():
    return jsonify(teams=to_json(services().auth.list_teams(current_principal())))


@bp.post("")
def create_team():
    data = json_body(required=("name",), optional=("description",))
    team = services().auth.create_team(current_principal(), field(data, "name", str),
                                       field(data, "description", str, ""))
    return jsonify(team=to_json(team)), 201


@bp.get("/<name>")
def get_team(name: str):
    principal = current_principal()
    team = services().auth.team(principal, name)
    return jsonify(team=to_json(team), role=principal.role_in(team.id))


@bp.get("/<name>/members")
def list_members(name: str):
    return jsonify(members=to_json(services().auth.list_members(current_principal(), name)))


@bp.put("/<name>/members/<username>")
def set_member(name: str, username: str):
    """Add a member or change their role (team admins)."""
    data = json_body(required=("role",))
    member = services().auth.set_member(current_principal(), name, username, field(data, "role", str))
    return jsonify(member=to_json(member))


@bp.delete("/<name>/members/<username>")
def remove_member(name: str, username: str):
    services().auth.remove_member(current_principal(), name, username)
    return "", 204
