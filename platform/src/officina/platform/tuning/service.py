"""Hyper-parameter studies: each trial is an ordinary job; Optuna (its samplers and pruners, its
state in this Postgres) decides what to try next and what to stop.

A study is driven in steps (``drive``), from the beat-driven task every few seconds and when it is
created: finished trials are told to Optuna, running ones report their new intermediate values to
the pruner (a trial it prunes is cancelled: SIGTERM, a grace period, and ``run.should_stop()``
turns true), and new trials are asked for and submitted up to the study's parallelism, trial count
and compute budget. Every step is idempotent and holds the study's row lock, so any number of
drivers may run and a study survives restarts of every process.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.errors import Conflict, Invalid, NotFound
from officina.platform.jobs.service import JobService
from officina.platform.tuning.space import distributions, grid, parse_space
from officina.platform.tuning.storage import optuna_storage

logger = logging.getLogger(__name__)

ALGORITHMS = ("tpe", "random", "grid", "cmaes")
EARLY_STOPPING = ("asha", "hyperband", "median", None)
MODES = ("max", "min")
MAX_TRIALS = 10_000
MAX_PARALLEL = 64
MISSING_METRIC_FAILS_AFTER = 2   # finished trials without the metric before the study fails
FIELDS = ("name", "job", "space", "metric", "mode", "trials", "parallel", "algorithm", "early_stopping",
          "budget", "seed", "min_resource")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
_KEY = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gpu[- ]?hours?|gpu[- ]?h|hours?|h|minutes?|min|m|seconds?|s)?\s*$", re.I)


@dataclass(frozen=True)
class Study:
    id: str
    team: str
    name: str
    spec: dict
    state: str
    reason: str
    best: dict | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Trial:
    number: int
    job_id: str | None
    run_id: str | None
    state: str
    params: dict
    value: float | None
    last_step: int | None
    reason: str
    job_state: str | None
    created_at: datetime
    finished_at: datetime | None


_STUDY = ("SELECT s.id::text AS id, t.name AS team, s.name, s.spec, s.state, s.reason, s.best, s.created_at,"
          " s.updated_at, s.finished_at FROM studies s JOIN teams t ON t.id = s.team_id")
_TRIALS = ("SELECT st.number, st.job_id::text AS job_id, j.run_id::text AS run_id, st.state, st.params, st.value,"
           " st.last_step, st.reason, j.state AS job_state, st.created_at, st.finished_at"
           " FROM study_trials st LEFT JOIN jobs j ON j.id = st.job_id WHERE st.study_id = %s ORDER BY st.number")


def parse_budget(value: Any) -> float | None:
    """Compute budget in GPU-hours (a trial without GPUs counts as one): ``2``, ``"2 GPU-hours"``, ``"90m"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Invalid("budget must be hours or a text like '2 GPU-hours' or '90m'", field="budget")
    if isinstance(value, (int, float)):
        hours = float(value)
    else:
        m = _BUDGET.match(str(value))
        if not m:
            raise Invalid(f"budget must look like '2 GPU-hours', '3h' or '90m', not {value!r}", field="budget")
        unit = (m.group(2) or "h").lower()
        hours = float(m.group(1)) / (60 if unit.startswith("m") else 3600 if unit.startswith("s") else 1)
    if not math.isfinite(hours) or hours <= 0 or hours > 1_000_000:
        raise Invalid("budget must be above 0 and at most 1,000,000 GPU-hours", field="budget")
    return hours


def _int(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{name} must be a whole number from {lo} to {hi}, not {value!r}", field=name)
    return value


def parse_study(body: Any) -> dict[str, Any]:
    """Check a study request (all but the job, which the job service checks)."""
    if not isinstance(body, dict):
        raise Invalid("send a JSON object", field="body")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise Invalid("name must be 1-100 letters, digits, spaces or ._- (starting with a letter or digit)",
                      field="name")
    metric = body.get("metric")
    if not isinstance(metric, str) or not _KEY.match(metric):
        raise Invalid("metric must name the metric the trials log (e.g. 'val_acc')", field="metric")
    mode = body.get("mode", "max")
    if mode not in MODES:
        raise Invalid("mode must be 'max' or 'min'", field="mode")
    algorithm = body.get("algorithm", "tpe")
    if algorithm not in ALGORITHMS:
        raise Invalid(f"algorithm must be one of {', '.join(ALGORITHMS)}", field="algorithm")
    early = body.get("early_stopping")
    if early not in EARLY_STOPPING:
        raise Invalid("early_stopping must be 'asha', 'hyperband', 'median' or null", field="early_stopping")
    space = parse_space(body.get("space"))
    trials = _int(body, "trials", 20, 1, MAX_TRIALS)
    if algorithm == "grid":
        points = grid(space)
        size = math.prod(len(v) for v in points.values())
        trials = min(trials, size)
    if algorithm == "cmaes" and any(d["type"] == "choice" for d in space.values()):
        raise Invalid("cmaes searches numbers only: use tpe or random for choice parameters", field="algorithm")
    job = body.get("job")
    if not isinstance(job, dict):
        raise Invalid("job must be an object: the job every trial runs (entrypoint and code, or trainer)",
                      field="job")
    return {"name": name, "metric": metric, "mode": mode, "algorithm": algorithm, "early_stopping": early,
            "space": space, "trials": trials, "parallel": _int(body, "parallel", 1, 1, MAX_PARALLEL),
            "budget_h": parse_budget(body.get("budget")), "seed": _int(body, "seed", 0, 0, 2**31 - 1),
            "min_resource": _int(body, "min_resource", 1, 1, 1_000_000), "job": job}


class StudyService:
    """Create, read, stop and extend studies; ``drive`` moves them on."""

    def __init__(self, pool: ConnectionPool, auth: AuthService, jobs: JobService, database_url: str):
        self.pool, self.auth, self.jobs, self.database_url = pool, auth, jobs, database_url

    # -- people's side ---------------------------------------------------------------------------------
    def create(self, principal: Principal, team: str, body: Any) -> Study:
        import optuna

        spec = parse_study(body)
        owner = self.auth.team(principal, team, Action.WRITE)
        job = dict(spec["job"])
        spec["job"] = self.jobs.check(principal, team, {**job, "params": {
            **(job.get("params") or {}), **{k: _example(d) for k, d in spec["space"].items()}}})
        spec["job"]["params"] = dict(job.get("params") or {})
        study_id = str(uuid.uuid4())
        optuna_name = f"officina-{study_id}"
        storage = optuna_storage(self.database_url)
        optuna.create_study(storage=storage, study_name=optuna_name,
                            direction="maximize" if spec["mode"] == "max" else "minimize")
        try:
            with self.pool.connection() as conn, conn.transaction():
                if conn.execute("SELECT 1 FROM studies WHERE team_id = %s AND name = %s",
                                (owner.id, spec["name"])).fetchone():
                    raise Conflict(f"team {team!r} already has a study named {spec['name']!r}", field="name")
                conn.execute("INSERT INTO studies (id, team_id, name, spec, state, optuna_name, created_by)"
                             " VALUES (%s, %s, %s, %s, 'running', %s, %s)",
                             (study_id, owner.id, spec["name"], Jsonb(spec), optuna_name, principal.user.id))
        except Exception:
            optuna.delete_study(study_name=optuna_name, storage=storage)
            raise
        return self.get(principal, study_id)

    def get(self, principal: Principal, study_id: str) -> Study:
        study = self._load(study_id)
        self.auth.team(principal, study.team, Action.READ)
        return study

    def list(self, principal: Principal, team: str) -> list[Study]:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Study)) as cur:
            return cur.execute(_STUDY + " WHERE s.team_id = %s ORDER BY s.created_at DESC LIMIT 200",
                               (owner.id,)).fetchall()

    def trials(self, principal: Principal, study_id: str) -> list[Trial]:
        study = self.get(principal, study_id)
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Trial)) as cur:
            return cur.execute(_TRIALS, (study.id,)).fetchall()

    def stop(self, principal: Principal, study_id: str) -> Study:
        """Stop a running study: no new trials; running ones are cancelled."""
        study = self.get(principal, study_id)
        self.auth.team(principal, study.team, Action.WRITE)
        if study.state != "running":
            raise Conflict(f"study {study.name!r} is already {study.state}", state=study.state)
        self._end(study.id, "stopped", f"stopped by {principal.user.username}")
        return self.get(principal, study_id)

    def extend(self, principal: Principal, study_id: str, more: Any) -> Study:
        """Add ``more`` trials to a study (resuming it when it had ended)."""
        study = self.get(principal, study_id)
        self.auth.team(principal, study.team, Action.WRITE)
        if isinstance(more, bool) or not isinstance(more, int) or not 1 <= more <= MAX_TRIALS:
            raise Invalid(f"trials must be a whole number from 1 to {MAX_TRIALS}", field="trials")
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("UPDATE studies SET spec = jsonb_set(spec, '{trials}', to_jsonb((spec->>'trials')::int + %s)),"
                         " state = 'running', reason = '', finished_at = NULL, updated_at = now() WHERE id = %s",
                         (more, study.id))
        return self.get(principal, study_id)

    def importance(self, principal: Principal, study_id: str) -> dict[str, float]:
        """Each parameter's importance for the metric over the completed trials (empty below 3)."""
        import optuna

        study = self.get(principal, study_id)
        loaded = optuna.load_study(study_name=f"officina-{study.id}", storage=optuna_storage(self.database_url))
        done = [t for t in loaded.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) < 3 or len(study.spec["space"]) < 1:
            return {}
        try:
            return dict(optuna.importance.get_param_importances(
                loaded, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
        except (RuntimeError, ValueError):  # e.g. every trial has the same value
            return {}

    # -- the driver ------------------------------------------------------------------------------------
    def running(self) -> list[str]:
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute("SELECT id::text FROM studies WHERE state = 'running'")]

    def drive(self, study_id: str) -> dict[str, int] | None:
        """One step of a study; None when another driver holds it or it is not running."""
        import optuna

        storage = optuna_storage(self.database_url)
        counts = {"told": 0, "pruned": 0, "launched": 0}
        to_cancel: list[tuple[str, str]] = []  # (job, reason) of trials the pruner stopped
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT spec, state, created_by, team_id FROM studies WHERE id = %s"
                               " FOR UPDATE SKIP LOCKED", (study_id,)).fetchone()
            if row is None or row[1] != "running":
                return None
            spec, _, created_by, _ = row
            with conn.cursor(row_factory=class_row(Trial)) as cur:
                trials = cur.execute(_TRIALS, (study_id,)).fetchall()
            study = optuna.load_study(study_name=f"officina-{study_id}", storage=storage,
                                      sampler=_sampler(spec, study_id, len(trials)), pruner=_pruner(spec))
            missing, ended_reason = [], None
            for t in trials:
                if t.state not in ("running", "pruning"):
                    continue
                result = self._settle(conn, study, study_id, spec, t, to_cancel)
                counts["told"] += result in ("complete", "pruned", "failed", "missing")
                counts["pruned"] += result == "pruning"
                if result == "missing":
                    missing.append(t.number)
            missing_total = conn.execute("SELECT count(*) FROM study_trials WHERE study_id = %s AND reason LIKE"
                                         " 'finished without logging%%'", (study_id,)).fetchone()[0]
            if missing_total >= min(MISSING_METRIC_FAILS_AFTER, spec["trials"]):
                logged = self._logged_keys(conn, study_id)
                ended_reason = ("failed", f"trials finished without logging {spec['metric']!r}; they logged: "
                                          f"{', '.join(logged) or 'nothing'}")
            used = self._used_hours(conn, study_id)
            if ended_reason is None and spec.get("budget_h") is not None and used >= spec["budget_h"]:
                ended_reason = ("stopped", f"budget used: {used:.2f} of {spec['budget_h']:g} GPU-hours")
            states = [t.state for t in self._trials(conn, study_id)]
            active = sum(s in ("running", "pruning") for s in states)
            if ended_reason is None:
                principal = self.auth.principal_for_user(created_by)
                team = conn.execute("SELECT t.name FROM teams t JOIN studies s ON s.team_id = t.id WHERE s.id = %s",
                                    (study_id,)).fetchone()[0]
                dists = distributions(spec["space"])
                while active < spec["parallel"] and len(states) < spec["trials"]:
                    trial = study.ask(dists)
                    params = {**(spec["job"].get("params") or {}), **trial.params}
                    name = f"{spec['name']}-trial-{trial.number}"
                    try:
                        job = self.jobs.submit(principal, team, {**spec["job"], "params": params, "name": name,
                                                                 "project": spec["job"].get("project") or
                                                                 f"tuning-{spec['name']}"})
                    except Exception as exc:  # e.g. the quota's priority cap changed: the study says why
                        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                        ended_reason = ("failed", f"could not submit trial {trial.number}: {exc}")
                        break
                    conn.execute("INSERT INTO study_trials (study_id, number, job_id, state, params)"
                                 " VALUES (%s, %s, %s, 'running', %s)",
                                 (study_id, trial.number, job.id, Jsonb(trial.params)))
                    states.append("running")
                    active += 1
                    counts["launched"] += 1
                if ended_reason is None and active == 0 and len(states) >= spec["trials"]:
                    ended_reason = ("succeeded", f"{len(states)} trials done")
            self._update_best(conn, study, study_id)
            waiting = conn.execute(
                "SELECT count(*), min(j.reason) FROM study_trials st JOIN jobs j ON j.id = st.job_id"
                " WHERE st.study_id = %s AND j.state = 'queued' AND j.reason LIKE 'waiting:%%'", (study_id,)).fetchone()
            note = f"{waiting[0]} trial(s) {waiting[1]}" if waiting[0] else ""
            conn.execute("UPDATE studies SET reason = %s WHERE id = %s AND state = 'running' AND reason <> %s",
                         (note, study_id, note))
        # cancel pruned trials' jobs only now: inside the step's transaction the trial rows' foreign
        # keys hold share locks on those very jobs
        for job_id, reason in to_cancel:
            try:
                self.jobs.cancel(self.auth.principal_for_user(created_by), job_id, reason=reason)
            except Conflict:  # it ended meanwhile; the next step settles it
                pass
        if ended_reason is not None:
            self._end(study_id, *ended_reason)
        return counts

    def _settle(self, conn, study, study_id: str, spec: dict, t: Trial, to_cancel: list) -> str:
        """Tell Optuna about a trial whose job ended; report new intermediate values of a running one."""
        import optuna

        run_id = t.run_id
        points = []
        if run_id:
            points = conn.execute("SELECT step, value FROM metrics WHERE run_id = %s AND key = %s AND step > %s"
                                  " ORDER BY step", (run_id, spec["metric"], -1 if t.last_step is None
                                                     else t.last_step)).fetchall()
        last = points[-1] if points else None
        if t.job_state in ("succeeded", "failed", "cancelled") or t.job_id is None:
            final = conn.execute("SELECT last_value, last_step FROM metric_summaries WHERE run_id = %s AND key = %s",
                                 (run_id, spec["metric"])).fetchone() if run_id else None
            if t.state == "pruning":  # its value stays the one it was pruned at (its reason says so)
                study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
                self._set(conn, study_id, t, "pruned", t.value, t.reason)
                return "pruned"
            if t.job_state == "succeeded" and final is not None:
                study.tell(t.number, final[0])
                self._set(conn, study_id, t, "complete", final[0], "", last_step=final[1])
                return "complete"
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if t.job_state == "succeeded":
                self._set(conn, study_id, t, "failed", None, f"finished without logging {spec['metric']!r}")
                return "missing"
            self._set(conn, study_id, t, "failed", None, f"its job {t.job_state or 'vanished'}")
            return "failed"
        if t.state == "pruning":  # told to stop; what it logs meanwhile changes nothing
            return "running"
        if not points or spec.get("early_stopping") is None:
            if last is not None:
                conn.execute("UPDATE study_trials SET last_step = %s, value = %s WHERE study_id = %s AND number = %s",
                             (last[0], last[1], study_id, t.number))
            return "running"
        storage = optuna_storage(self.database_url)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(f"officina-{study_id}"), t.number)
        trial = optuna.trial.Trial(study, trial_id)
        for step, value in points:
            trial.report(value, step)
        conn.execute("UPDATE study_trials SET last_step = %s, value = %s WHERE study_id = %s AND number = %s",
                     (last[0], last[1], study_id, t.number))
        if trial.should_prune():
            reason = f"pruned by {spec['early_stopping']} at step {last[0]} ({spec['metric']} = {last[1]:.4g})"
            conn.execute("UPDATE study_trials SET state = 'pruning', reason = %s WHERE study_id = %s AND number = %s",
                         (reason, study_id, t.number))
            to_cancel.append((t.job_id, reason))
            return "pruning"
        return "running"

    def _set(self, conn, study_id: str, t: Trial, state: str, value: float | None, reason: str, *,
             last_step: int | None = None) -> None:
        conn.execute("UPDATE study_trials SET state = %s, value = %s, reason = %s, finished_at = now(),"
                     " last_step = coalesce(%s, last_step) WHERE study_id = %s AND number = %s",
                     (state, value, reason, last_step, study_id, t.number))

    def _trials(self, conn, study_id: str) -> list[Trial]:
        with conn.cursor(row_factory=class_row(Trial)) as cur:
            return cur.execute(_TRIALS, (study_id,)).fetchall()

    def _used_hours(self, conn, study_id: str) -> float:
        return float(conn.execute(
            "SELECT coalesce(sum(greatest(j.gpus, 1) * extract(epoch FROM coalesce(j.finished_at, now()) - j.started_at)),"
            " 0) / 3600.0 FROM study_trials st JOIN jobs j ON j.id = st.job_id WHERE st.study_id = %s"
            " AND j.started_at IS NOT NULL", (study_id,)).fetchone()[0])

    def _logged_keys(self, conn, study_id: str) -> list[str]:
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT m.key FROM study_trials st JOIN jobs j ON j.id = st.job_id"
            " JOIN metric_summaries m ON m.run_id = j.run_id WHERE st.study_id = %s ORDER BY 1 LIMIT 20",
            (study_id,))]

    def _update_best(self, conn, study, study_id: str) -> None:
        import optuna

        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if not done:
            return
        best = study.best_trial
        job = conn.execute("SELECT st.job_id::text, j.run_id::text FROM study_trials st LEFT JOIN jobs j"
                           " ON j.id = st.job_id WHERE st.study_id = %s AND st.number = %s",
                           (study_id, best.number)).fetchone()
        conn.execute("UPDATE studies SET best = %s, updated_at = now() WHERE id = %s",
                     (Jsonb({"number": best.number, "value": best.value, "params": best.params,
                             "job_id": job[0] if job else None, "run_id": job[1] if job else None}), study_id))

    def _end(self, study_id: str, state: str, reason: str) -> None:
        """End a study; cancel its running trials."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute("UPDATE studies SET state = %s, reason = %s, finished_at = now(), updated_at = now()"
                               " WHERE id = %s AND state = 'running' RETURNING created_by", (state, reason, study_id)
                               ).fetchone()
            if row is None:
                return
            running = [r[0] for r in conn.execute(
                "SELECT st.job_id::text FROM study_trials st JOIN jobs j ON j.id = st.job_id WHERE st.study_id = %s"
                " AND j.state IN ('queued', 'admitted', 'running', 'retrying')", (study_id,))]
            open_trials = [r[0] for r in conn.execute(
                "UPDATE study_trials SET state = 'failed', reason = %s, finished_at = now() WHERE study_id = %s"
                " AND state IN ('running', 'pruning') RETURNING number", (f"cancelled: the study {state}", study_id))]
        if open_trials:
            import optuna

            study = optuna.load_study(study_name=f"officina-{study_id}", storage=optuna_storage(self.database_url))
            for number in open_trials:
                try:
                    study.tell(number, state=optuna.trial.TrialState.FAIL)
                except (RuntimeError, ValueError):  # already finished in Optuna
                    pass
        principal = self.auth.principal_for_user(row[0])
        for job_id in running:
            try:
                self.jobs.cancel(principal, job_id, reason=f"study {state}: {reason}")
            except Conflict:
                pass

    def _load(self, study_id: str) -> Study:
        try:
            uuid.UUID(str(study_id))
        except ValueError:
            raise NotFound(f"study {study_id!r} not found") from None
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Study)) as cur:
            study = cur.execute(_STUDY + " WHERE s.id = %s", (study_id,)).fetchone()
        if study is None:
            raise NotFound(f"study {study_id!r} not found")
        return study


def _example(d: dict) -> Any:
    """A value of the distribution, to check a trial's job body (types) before any trial runs."""
    return d["choices"][0] if d["type"] == "choice" else d["low"]


def _sampler(spec: dict, study_id: str, asked: int):
    """A fresh sampler for this step (samplers read their history from the storage); seeded by the
    study and how many trials were asked, so steps don't repeat each other's draws."""
    import optuna

    seed = (int(hashlib.sha256(study_id.encode()).hexdigest()[:8], 16) + spec.get("seed", 0) * 7919 + asked) % 2**31
    algorithm = spec["algorithm"]
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        return optuna.samplers.GridSampler(grid(spec["space"]), seed=seed)
    if algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec["trials"] // 5)))


def _pruner(spec: dict):
    import optuna

    early = spec.get("early_stopping")
    min_resource = spec.get("min_resource", 1)
    if early == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=3)
    if early == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource)
    if early == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=min_resource)
    return optuna.pruners.NopPruner()
