"""Console views: login, overview, API tokens, teams, administration, and the area shells."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from officina.platform.errors import Invalid, OfficinaError, Unauthenticated
from officina.platform.health import check_all
from officina.web.auth import current_principal, login_session, logout_session, services

bp = Blueprint("console", __name__)

# Areas later issues fill in; each shows in the navigation from the start.
AREAS = {
    "labeling": ("Labeling", "Label projects, tasks and annotations."),
    "models": ("Models", "The model registry, CI gates and exports."),
    "deployments": ("Deployments", "Serving endpoints, canaries and shadows."),
    "monitoring": ("Monitoring", "Predictions, drift and alerts."),
}


def _safe_next(target: str | None) -> str:
    """Only same-site relative redirects after login."""
    if not target:
        return url_for("console.home")
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("console.home")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        try:
            user = services().auth.authenticate_password(request.form.get("username", ""),
                                                         request.form.get("password", ""))
        except Unauthenticated as exc:
            error = exc.message
        else:
            login_session(user.id)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=error, username=request.form.get("username", "")), \
        401 if error else 200


@bp.post("/logout")
def logout():
    held = session.get("try_token") or {}
    if held.get("id"):  # the deployments page's "Try it" token dies with the session
        try:
            services().auth.revoke_token(current_principal(), held["id"])
        except OfficinaError:
            pass
    logout_session()
    return redirect(url_for("console.login"))


@bp.get("/")
def home():
    principal = current_principal()
    svc = services()
    health = check_all(svc.pool, svc.store, svc.celery)
    return render_template("home.html", teams=svc.auth.list_teams(principal), health=health, areas=AREAS)


@bp.get("/area/<area>")
def area(area: str):
    current_principal()
    if area not in AREAS:
        abort(404)
    title, blurb = AREAS[area]
    return render_template("area.html", area=area, title=title, blurb=blurb)


@bp.route("/settings/tokens", methods=["GET", "POST"])
def tokens():
    principal = current_principal()
    auth = services().auth
    created = None
    if request.method == "POST":
        action = request.form.get("action")
        try:
            if action == "create":
                days = request.form.get("expires_in_days", "").strip()
                _, created = auth.create_token(principal.user.id, request.form.get("name", "").strip(),
                                               expires_in_days=float(days) if days else None)
            elif action == "revoke":
                auth.revoke_token(principal, int(request.form.get("token_id", "0")))
                flash("Token revoked.", "ok")
        except ValueError:
            flash("Expiry must be a number of days.", "error")
        except OfficinaError as exc:
            flash(exc.message, "error")
    return render_template("tokens.html", tokens=auth.list_tokens(principal), created=created)


@bp.route("/teams/<name>", methods=["GET", "POST"])
def team(name: str):
    principal = current_principal()
    auth = services().auth
    team = auth.team(principal, name)
    if request.method == "POST":
        try:
            if request.form.get("action") == "remove":
                auth.remove_member(principal, name, request.form.get("username", ""))
                flash("Member removed.", "ok")
            else:
                auth.set_member(principal, name, request.form.get("username", "").strip(),
                                request.form.get("role", ""))
                flash("Member saved.", "ok")
        except OfficinaError as exc:
            flash(exc.message, "error")
        return redirect(url_for("console.team", name=name))
    can_manage = principal.is_admin or principal.role_in(team.id) == "admin"
    return render_template("team.html", team=team, members=auth.list_members(principal, name),
                           can_manage=can_manage, my_role=principal.role_in(team.id))


@bp.route("/admin", methods=["GET", "POST"])
def admin():
    principal = current_principal()
    if not principal.is_admin:
        abort(403)
    auth = services().auth
    new_user = None
    if request.method == "POST":
        try:
            if request.form.get("action") == "set_quota":
                team = request.form.get("team", "")
                services().quotas.set(principal, team, _quota_form(request.form))
                flash(f"Quota of team {team} updated.", "ok")
            elif request.form.get("action") == "create_team":
                auth.create_team(principal, request.form.get("name", "").strip(),
                                 request.form.get("description", ""))
                flash("Team created.", "ok")
            else:
                team = request.form.get("team") or None
                user, password = auth.create_user(
                    request.form.get("username", "").strip(), request.form.get("password") or None,
                    is_admin=bool(request.form.get("is_admin")), team=team,
                    role=request.form.get("role", "member"), actor=principal)
                new_user = (user.username, password)
        except OfficinaError as exc:
            flash(exc.message, "error")
    return render_template("admin.html", users=auth.list_users(principal),
                           teams=auth.list_teams(principal), new_user=new_user,
                           quotas=services().quotas.list(principal), workers=services().fleet.list(principal),
                           holders=services().queue.holders(), scheduler=services().scheduler.state(),
                           queue=services().queue.queue(principal))


def _quota_form(form) -> dict:
    """Quota fields from the admin form: blank caps mean no cap; numbers are checked by the service."""
    def number(name: str, kind):
        raw = (form.get(name) or "").strip()
        if raw == "":
            return None
        try:
            return kind(raw)
        except ValueError:
            raise Invalid(f"{name} must be a number, not {raw!r}", field=name) from None

    return {"max_gpus": number("max_gpus", int), "gpu_hours_per_week": number("gpu_hours_per_week", float),
            "max_priority": form.get("max_priority", "high"), "weight": number("weight", float) or 1.0}


# Each area's pages live in their own module, on this blueprint.
from officina.web.console import data as _data  # noqa: E402,F401
from officina.web.console import jobs as _jobs  # noqa: E402,F401
from officina.web.console import experiments as _experiments  # noqa: E402,F401
from officina.web.console import tuning as _tuning  # noqa: E402,F401
from officina.web.console import models as _models  # noqa: E402,F401
from officina.web.console import deployments as _deployments  # noqa: E402,F401
