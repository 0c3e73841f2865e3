"""Console pages for tuning: a team's studies with a form to start one over a built-in trainer, and a
study's page (its trials, the optimisation history, parallel coordinates and parameter importances)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from flask import flash, redirect, render_template, request, url_for

from officina.platform.errors import Invalid, OfficinaError
from officina.platform.jobs.spec import TRAINERS
from officina.platform.tasks import TUNING_DRIVE
from officina.web.auth import current_principal, services
from officina.web.console.experiments import duration, fmt
from officina.web.console.views import bp
from officina.web.serialize import to_json

logger = logging.getLogger(__name__)

ALGORITHMS = ("tpe", "random", "grid", "cmaes")
EARLY_STOPPING = ("", "asha", "hyperband", "median")  # "" is none
MODES = ("max", "min")
ENDED = ("succeeded", "failed", "stopped")
TRIAL_ENDED = ("complete", "pruned", "failed")
# A search space over each built-in trainer's real params (see workers/.../trainers/*.py PARAMS).
DEFAULT_SPACES = {
    "tabular": {"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
                "hidden": {"type": "choice", "choices": [32, 64, 128]},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    "image": {"lr": {"type": "float", "low": 0.0001, "high": 0.03, "log": True},
              "hidden": {"type": "choice", "choices": [16, 32, 64]}},
    "text": {"lr": {"type": "float", "low": 0.0001, "high": 0.05, "log": True},
             "hidden": {"type": "choice", "choices": [32, 64, 128]}},
}
DEFAULT_EPOCHS = 5


def space_text(trainer: str) -> str:
    """The default search space of ``trainer`` as the form's JSON, one parameter a line."""
    space = DEFAULT_SPACES.get(trainer, DEFAULT_SPACES["tabular"])
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in space.items()) + "\n}"


def _whole(form, name: str, default: int) -> int:
    raw = (form.get(name) or "").strip()
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} must be a whole number, not {raw!r}", field=name) from None


def study_body(form) -> dict:
    """The study request of the New study form (the study service checks it)."""
    try:
        space = json.loads(form.get("space") or "")
    except ValueError as exc:
        raise Invalid(f"the search space is not valid JSON: {exc}", field="space") from None
    trainer = form.get("trainer") or ""
    job: dict = {"trainer": trainer, "params": {"epochs": _whole(form, "epochs", DEFAULT_EPOCHS)}}
    if form.get("dataset"):
        job["datasets"] = {"train": form["dataset"]}
    name = (form.get("name") or "").strip()
    body = {"name": name, "job": job, "space": space, "metric": (form.get("metric") or "").strip(),
            "mode": form.get("mode") or "max", "trials": _whole(form, "trials", 20),
            "parallel": _whole(form, "parallel", 1), "algorithm": form.get("algorithm") or "tpe",
            "early_stopping": form.get("early_stopping") or None}
    budget = (form.get("budget") or "").strip()
    if budget:
        body["budget"] = budget
    return body


def _counts(trials) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "complete": 0, "pruned": 0, "failed": 0}
    for t in trials:
        if t.state in TRIAL_ENDED:
            counts["done"] += 1
            counts[t.state] += 1
        else:
            counts["running"] += 1
    return counts


@bp.route("/tuning", methods=["GET", "POST"])
def tuning():
    """A team's studies and the New study form."""
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    names = [t.name for t in teams]
    wanted = request.form.get("team") if request.method == "POST" else request.args.get("team")
    team = wanted if wanted in names else (names[0] if names else None)
    if request.method == "POST" and team:
        try:
            study = svc.studies.create(principal, team, study_body(request.form))
        except OfficinaError as exc:
            flash(exc.message, "error")
        else:
            svc.send_task(TUNING_DRIVE, [study.id], "io")  # the first trials start now, not at the next beat
            flash(f"Started study {study.name}.", "ok")
            return redirect(url_for("console.study", study_id=study.id))
    studies, counts, datasets, error = [], {}, [], None
    if team:
        try:
            studies = svc.studies.list(principal, team)
            counts = {s.id: _counts(svc.studies.trials(principal, s.id)) for s in studies}
            datasets = [d for d in svc.datasets.list(principal, team) if d.latest]
        except OfficinaError as exc:
            error = exc.message
    form = request.form if request.method == "POST" else {}
    trainer = form.get("trainer") or "tabular"
    default_name = f"study-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    return render_template("tuning.html", teams=teams, team=team, studies=studies, counts=counts,
                           datasets=datasets, trainers=TRAINERS, algorithms=ALGORITHMS,
                           early_stopping=EARLY_STOPPING, modes=MODES, form=form, trainer=trainer,
                           default_name=default_name, default_epochs=DEFAULT_EPOCHS,
                           space=form.get("space") or space_text(trainer),
                           default_spaces={k: space_text(k) for k in DEFAULT_SPACES}, error=error, fmt=fmt)


def _importance(principal, study_id: str) -> tuple[dict[str, float], str | None]:
    try:
        return services().studies.importance(principal, study_id), None
    except OfficinaError as exc:
        return {}, exc.message
    except Exception as exc:  # noqa: BLE001 - Optuna's own errors: say so on the page, keep the page
        logger.exception("importance of study %s", study_id)
        return {}, f"could not compute importances: {exc}"


@bp.get("/studies/<study_id>")
def study(study_id: str):
    """One study: state and why, the best trial, the trials, the history chart, parallel coordinates, importances."""
    principal = current_principal()
    svc = services()
    record = svc.studies.get(principal, study_id)
    trials = svc.studies.trials(principal, study_id)
    importance, importance_error = _importance(principal, study_id)
    # the searched params' order, for the script's columns and axes (the tojson filter sorts object keys)
    data = {"study": to_json(record), "trials": to_json(trials), "importance": importance,
            "keys": list(record.spec["space"])}
    return render_template("study.html", study=record, spec=record.spec, trials=trials, counts=_counts(trials),
                           importance=importance, importance_error=importance_error, data=data, fmt=fmt,
                           duration=duration, ended=record.state in ENDED,
                           fixed={k: v for k, v in (record.spec["job"].get("params") or {}).items()
                                  if k not in record.spec["space"]})


@bp.post("/studies/<study_id>/stop")
def stop_study(study_id: str):
    try:
        services().studies.stop(current_principal(), study_id)
        flash("Study stopped; its running trials are being cancelled.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(url_for("console.study", study_id=study_id))


@bp.post("/studies/<study_id>/extend")
def extend_study(study_id: str):
    svc = services()
    try:
        more = _whole(request.form, "trials", 0)
        study = svc.studies.extend(current_principal(), study_id, more)
    except OfficinaError as exc:
        flash(exc.message, "error")
    else:
        svc.send_task(TUNING_DRIVE, [study.id], "io")
        flash(f"Added {more} trial(s).", "ok")
    return redirect(url_for("console.study", study_id=study_id))


@bp.post("/studies/<study_id>/register-best")
def register_best(study_id: str):
    """Register the best trial's logged model as a new version of a named model, then show that model."""
    principal = current_principal()
    svc = services()
    try:
        study = svc.studies.get(principal, study_id)
        best = study.best or {}
        if not best.get("run_id"):
            raise Invalid("no trial has completed with a run yet", field="best")
        name = request.form.get("model", "").strip()
        version = svc.models.register_from_run(principal, best["run_id"], name, artifact="model.pt",
                                               description=f"best trial #{best['number']} of study {study.name}")
    except OfficinaError as exc:
        flash(exc.message, "error")
        return redirect(url_for("console.study", study_id=study_id))
    flash(f"Registered {name} v{version['version']} from trial #{best['number']}.", "ok")
    return redirect(url_for("console.model", team=version["team"], name=name))
