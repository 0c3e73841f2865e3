"""The one access check: may this caller do this to that team's resources?

Every route that touches a team-owned resource goes through ``authorize``. A caller outside
the team gets NotFound (we don't reveal what other teams hold); a member without the needed
role gets Forbidden.
"""
from __future__ import annotations

from officina.platform.auth.entities import Action, Principal, Role, Team
from officina.platform.errors import Forbidden, NotFound

_ALLOWED = {
    Action.READ: {Role.ADMIN.value, Role.MEMBER.value, Role.VIEWER.value},
    Action.WRITE: {Role.ADMIN.value, Role.MEMBER.value},
    Action.MANAGE: {Role.ADMIN.value},
}


def authorize(principal: Principal, team: Team, action: Action) -> None:
    """Raise unless ``principal`` may perform ``action`` on resources of ``team``.

    Raises:
        NotFound: the caller is not a member of the team (and not a site admin).
        Forbidden: the caller's role does not allow the action, or the token's scope excludes it.
    """
    scoped_team = principal.scope.get("team_id")
    if scoped_team is not None and scoped_team != team.id:
        raise NotFound(f"team {team.name!r} not found")
    if principal.scope.get("read_only") and action is not Action.READ:
        raise Forbidden("this token is read-only")
    if principal.scope.get("run") and action is not Action.READ:
        raise Forbidden(f"this token belongs to run {principal.scope['run']}; it may write only to that run")
    if principal.is_admin:
        return
    role = principal.role_in(team.id)
    if role is None:
        raise NotFound(f"team {team.name!r} not found")
    if role not in _ALLOWED[action]:
        raise Forbidden(
            f"your role in team {team.name!r} is {role}; {action.value} needs "
            + " or ".join(sorted(_ALLOWED[action])),
            role=role,
        )


def require_site_admin(principal: Principal) -> None:
    """Raise Forbidden unless the caller is a site admin."""
    if not principal.is_admin:
        raise Forbidden("only administrators may do this")
