"""Console pages for deployments: a team's deployments with a form to create one, and a deployment's page
(routes, shadow, batching, an update form, revisions with roll back, recent predictions, delete, and
"Try it", which sends rows to the prediction server on the caller's behalf)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import requests
from flask import flash, redirect, render_template, request, session, url_for

from officina.platform.errors import Invalid, OfficinaError
from officina.web.auth import current_principal, services
from officina.web.console.experiments import fmt
from officina.web.console.models import pick_team
from officina.web.console.views import bp

logger = logging.getLogger(__name__)

ROUTE_SLOTS = 2  # the forms offer a main route and a canary
TRY_TOKEN_DAYS = 0.5  # the console's own short-lived token for "Try it", one per session
TRY_TIMEOUT_S = 30
LOG_LIMIT = 20


def _whole(form, name: str, *, number=int):
    raw = (form.get(name) or "").strip()
    if raw == "":
        return None
    try:
        return number(raw)
    except ValueError:
        raise Invalid(f"{name.replace('_', ' ')} must be a number, not {raw!r}", field=name) from None


def _version_ref(raw: str):
    raw = (raw or "").strip() or "latest"
    return int(raw) if raw.isdigit() else raw


def routes_from_form(form) -> list[dict]:
    """The routes of the create and update forms: ``route_model``/``route_version``/``route_weight`` rows,
    blank model rows skipped; a lone route takes all traffic when its weight is blank."""
    models, versions, weights = (form.getlist(k) for k in ("route_model", "route_version", "route_weight"))
    routes = []
    for i, model in enumerate(models):
        if not model.strip():
            continue
        weight = (weights[i] if i < len(weights) else "").strip()
        route = {"model": model.strip(), "version": _version_ref(versions[i] if i < len(versions) else "")}
        if weight:
            if not weight.isdigit():
                raise Invalid(f"the weight of route {i + 1} must be a whole number 0-100, not {weight!r}",
                              field="routes")
            route["weight"] = int(weight)
        routes.append(route)
    if not routes:
        raise Invalid("choose a model for the first route", field="routes")
    if len(routes) > 1 and any("weight" not in r for r in routes):
        raise Invalid("give every route a weight when traffic is split (they add up to 100)", field="routes")
    return routes


def deployment_body(form, *, new: bool) -> dict:
    """The service request of the create (``new``) or update form."""
    body: dict = {"routes": routes_from_form(form)}
    if new:
        body["name"] = (form.get("name") or "").strip()
    shadow = (form.get("shadow_model") or "").strip()
    if shadow:
        body["shadow"] = {"model": shadow, "version": _version_ref(form.get("shadow_version", ""))}
    elif not new:
        body["shadow"] = None
    for key, number in (("max_batch_size", int), ("max_wait_ms", float)):
        value = _whole(form, key, number=number)
        if value is not None:
            body[key] = value
    note = (form.get("note") or "").strip()
    if note:
        body["note"] = note
    return body


@bp.route("/deployments", methods=["GET", "POST"])
def deployments():
    """A team's deployments and the New deployment form."""
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    team = pick_team(teams, request.form.get("team") if request.method == "POST" else request.args.get("team"))
    if request.method == "POST" and team:
        try:
            created = svc.models.create_deployment(principal, team, deployment_body(request.form, new=True))
        except OfficinaError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Created deployment {created['name']}.", "ok")
            return redirect(url_for("console.deployment", name=created["name"]))
    listing, models, error = [], [], None
    if team:
        try:
            listing = svc.models.list_deployments(principal, team)
            models = svc.models.list_models(principal, team)
        except OfficinaError as exc:
            error = exc.message
    return render_template("deployments.html", teams=teams, team=team, deployments=listing, models=models,
                           error=error, form=request.form if request.method == "POST" else None,
                           slots=ROUTE_SLOTS, predict_url=svc.settings.predict_url)


@bp.get("/deployments/<name>")
def deployment(name: str):
    return _render_deployment(name)


def _example_rows(principal, team: str, route: dict | None) -> str:
    """One row of zeros shaped like the first route's input, as the Try it box's starting JSON."""
    if not route or route.get("model") is None:
        return '{"rows": [[0.0]]}'
    try:
        version = services().models.get_version(principal, team, route["model"], str(route["version"]))
    except OfficinaError:
        return '{"rows": [[0.0]]}'
    shape = version["signature"]["inputs"]["shape"][1:]
    row: object = 0.0
    for size in reversed(shape):
        row = [row] * size
    return json.dumps({"rows": [row]})


def _render_deployment(name: str, *, tried: dict | None = None, rows_text: str | None = None):
    principal = current_principal()
    svc = services()
    record = svc.models.get_deployment(principal, name)
    team = record["team"]
    logs = svc.models.prediction_logs(principal, name, limit=LOG_LIMIT)
    example = _example_rows(principal, team, record["routes"][0] if record["routes"] else None)
    models = svc.models.list_models(principal, team)
    labels = _version_labels(principal, team, models, record["revisions"])
    endpoint = f"{svc.settings.predict_url}/v1/deployments/{name}/predict"
    return render_template("deployment.html", deployment=record, team=team, logs=logs, models=models,
                           endpoint=endpoint, example=example, rows_text=rows_text or example, tried=tried,
                           slots=ROUTE_SLOTS, fmt=fmt, short=_short,
                           version_label=lambda version_id: labels.get(version_id, f"{version_id[:8]}…"))


def _version_labels(principal, team: str, models: list[dict], revisions: list[dict]) -> dict[str, str]:
    """``model vN`` of each version id the revisions name (looked up among the team's models)."""
    wanted = {r["version_id"] for rev in revisions for r in rev["spec"]["routes"]}
    wanted |= {rev["spec"]["shadow"] for rev in revisions if rev["spec"].get("shadow")}
    labels: dict[str, str] = {}
    for model in models:
        if wanted <= set(labels):
            break
        for version in services().models.list_versions(principal, team, model["name"]):
            labels[str(version["id"])] = f"{model['name']} v{version['version']}"
    return labels


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 1] + "…"


@bp.post("/deployments/<name>/update")
def deployment_update(name: str):
    try:
        updated = services().models.update_deployment(current_principal(), name,
                                                      deployment_body(request.form, new=False))
        flash(f"Updated {name}: now revision {updated['revision']}.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(url_for("console.deployment", name=name))


@bp.post("/deployments/<name>/rollback")
def deployment_rollback(name: str):
    try:
        revision = _whole(request.form, "revision")
        done = services().models.rollback_deployment(current_principal(), name, revision)
        flash(f"Rolled {name} back to revision {revision}'s spec (now revision {done['revision']}).", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(url_for("console.deployment", name=name))


@bp.post("/deployments/<name>/delete")
def deployment_delete(name: str):
    principal = current_principal()
    try:
        team = services().models.get_deployment(principal, name)["team"]
        services().models.delete_deployment(principal, name)
    except OfficinaError as exc:
        flash(exc.message, "error")
        return redirect(url_for("console.deployment", name=name))
    flash(f"Deleted deployment {name}.", "ok")
    return redirect(url_for("console.deployments", team=team))


@bp.post("/deployments/<name>/try")
def deployment_try(name: str):
    """Send the typed rows to the prediction server as the logged-in user, and show its answer."""
    text = request.form.get("rows", "")
    try:
        body = _try_body(text)
    except OfficinaError as exc:
        flash(exc.message, "error")
        return _render_deployment(name, rows_text=text), 400
    return _render_deployment(name, tried=_send_try(name, body), rows_text=text)


def _try_body(text: str) -> dict:
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise Invalid(f"the rows are not valid JSON: {exc}", field="rows") from None
    if isinstance(body, list):
        body = {"rows": body}
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise Invalid('send JSON like {"rows": [[1.0, 2.0, …]]}', field="rows")
    return body


def _send_try(name: str, body: dict) -> dict:
    """The prediction server's answer (status and JSON), retried once with a fresh token when refused."""
    url = f"{services().settings.predict_url}/v1/deployments/{name}/predict"
    for fresh in (False, True):
        headers = {"Authorization": f"Bearer {_try_token(fresh=fresh)}"}
        try:
            response = requests.post(url, json=body, headers=headers, timeout=TRY_TIMEOUT_S)
        except requests.RequestException as exc:
            logger.warning("try-it could not reach the prediction server deployment=%s: %s", name, exc)
            return {"status": None, "error": f"the prediction server at {services().settings.predict_url} did not "
                                             f"answer: {type(exc).__name__}"}
        if response.status_code != 401:
            break
    try:
        answer = response.json()
    except ValueError:
        answer = {"text": response.text[:2000]}
    return {"status": response.status_code, "answer": answer, "json": json.dumps(answer, indent=2),
            "version": response.headers.get("X-Model-Version")}


def _try_token(*, fresh: bool) -> str:
    """The console's short-lived API token of the logged-in user, made once per session."""
    held = session.get("try_token") or {}
    expires = held.get("expires")
    if not fresh and held.get("token") and expires and datetime.fromisoformat(expires) > \
            datetime.now(timezone.utc) + timedelta(minutes=5):
        return held["token"]
    principal = current_principal()
    record, token = services().auth.create_token(principal.user.id, "console try-it", expires_in_days=TRY_TOKEN_DAYS)
    until = record.expires_at or datetime.now(timezone.utc) + timedelta(days=TRY_TOKEN_DAYS)
    session["try_token"] = {"token": token, "id": record.id, "expires": until.isoformat()}
    return token
