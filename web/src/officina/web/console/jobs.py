"""Console pages for jobs: the list, a form to submit a built-in trainer, a job page with live logs."""
from __future__ import annotations

import json

from flask import flash, redirect, render_template, request, url_for

from officina.platform.errors import Invalid, OfficinaError
from officina.platform.jobs.spec import TRAINERS
from officina.web.auth import current_principal, services
from officina.web.console.views import bp

STATES = ("queued", "admitted", "running", "retrying", "succeeded", "failed", "cancelled")


def _trainer_spec(form) -> tuple[str, dict]:
    """The team and JSON spec of the submit form."""
    try:
        params = json.loads(form.get("params") or "{}")
    except ValueError as exc:
        raise Invalid(f"params must be a JSON object: {exc}", field="params") from None
    spec = {"trainer": form.get("trainer"), "params": params, "project": form.get("project") or "default",
            "timeout": form.get("timeout") or "2h", "gpus": int(form.get("gpus") or 0)}
    if form.get("name"):
        spec["name"] = form["name"]
    if form.get("dataset"):
        spec["datasets"] = {"train": form["dataset"]}
    return form.get("team", ""), spec


@bp.route("/jobs", methods=["GET", "POST"])
def jobs():
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    if request.method == "POST":
        try:
            team, spec = _trainer_spec(request.form)
            job = svc.jobs.submit(principal, team, spec)
        except (OfficinaError, ValueError) as exc:
            flash(getattr(exc, "message", str(exc)), "error")
        else:
            flash(f"Submitted job {job.name}.", "ok")
            return redirect(url_for("console.job", job_id=job.id))
    state = request.args.get("state") or None
    listing = []
    for team in teams:
        try:
            listing.extend(svc.jobs.list(principal, team.name, state=state if state in STATES else None, limit=100))
        except OfficinaError:
            continue
    listing.sort(key=lambda j: j.created_at, reverse=True)
    datasets = {team.name: [d for d in svc.datasets.list(principal, team.name) if d.latest] for team in teams}
    return render_template("jobs.html", jobs=listing[:200], teams=teams, datasets=datasets, trainers=TRAINERS,
                           states=STATES, state=state, form=request.form)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    principal = current_principal()
    svc = services()
    record = svc.jobs.get(principal, job_id)
    return render_template("job.html", job=record, events=svc.jobs.events(principal, job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    try:
        services().jobs.cancel(current_principal(), job_id)
        flash("Cancel requested.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(url_for("console.job", job_id=job_id))


@bp.get("/fleet")
def fleet():
    """The workers with each GPU's holder, the scheduler's state and the queue with waiting reasons."""
    principal = current_principal()
    svc = services()
    return render_template("fleet.html", workers=svc.fleet.list(principal), holders=svc.queue.holders(),
                           scheduler=svc.scheduler.state(), queue=svc.queue.queue(principal))
