"""The model registry: models, versions with lineage and signature, aliases moved by gated promotion,
evaluations and exports (computed by workers), deployments with revisions, and batch predictions.

Rows are the truth; workers claim queued evaluations, exports and batch predictions (``*_task``) and
report back (``finish_*`` / ``fail_*``). A deployment change notifies the serving processes
(``NOTIFY officina_deployments``) in the same transaction.
"""
from __future__ import annotations

import io
import logging
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Action, Principal, Team
from officina.platform.auth.service import AuthService
from officina.platform.datasets.build_repo import GC_LOCK
from officina.platform.db.ids import valid_uuid
from officina.platform.errors import Conflict, Forbidden, Invalid, NotFound
from officina.platform.models import gates as gate_rules
from officina.platform.models.signature import validate_signature
from officina.platform.storage.blobs import BlobStore
from officina.platform.tasks import MODEL_BATCH_PREDICT, MODEL_EVALUATE, MODEL_EXPORT

logger = logging.getLogger(__name__)

CHANNEL = "officina_deployments"
EXPORT_FORMATS = ("onnx", "torchscript", "onnx_int8")
EXPORT_FILENAMES = {"onnx": "model.onnx", "torchscript": "model.pt", "onnx_int8": "model.int8.onnx"}
SOURCE_FILENAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}
MAX_MODEL_BYTES = 2 * 1024**3
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_DEPLOY_KEYS = ("name", "routes", "shadow", "max_batch_size", "max_wait_ms", "log_sample", "note")
Sender = Callable[[str, list, str], None]


def _name(value: Any, what: str = "model name") -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise Invalid(f"{what} must be 1-63 characters of a-z, 0-9, '_', '.', '-' starting with a letter or digit",
                      field="name")
    return value


def sniff_format(data: bytes) -> str:
    """``torchscript`` or ``onnx`` from a model file's bytes, without loading (or unpickling) anything.

    Raises:
        Invalid: a pickle, a ``torch.save`` file, or anything else that is not TorchScript or ONNX.
    """
    if data[:2] == b"PK":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise Invalid("the model file is a broken zip archive", field="file") from None
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            raise Invalid("this is a pickled torch file (torch.save): loading it could run code, so it is refused. "
                          "Register TorchScript (torch.jit.save) or ONNX instead", field="file")
        raise Invalid("a zip that is not a TorchScript archive", field="file")
    if data[:1] in (b"\x80",) or data[:2] in (b"(d", b"(l", b"}q", b"]q", b"cc", b"cp"):
        raise Invalid("this is a Python pickle: loading it could run code, so it is refused. "
                      "Register TorchScript (torch.jit.save) or ONNX instead", field="file")
    try:
        import onnx

        model = onnx.load_from_string(data)
        if model.graph is not None and len(model.graph.node) > 0:
            return "onnx"
    except Exception:  # noqa: BLE001 - onnx raises DecodeError and friends for anything else
        pass
    raise Invalid("not a model file Officina can load: send TorchScript (torch.jit.save) or ONNX", field="file")


def _onnx_signature(data: bytes) -> dict:
    """A signature read from an ONNX graph's first input and output (symbolic dims become -1)."""
    import onnx

    graph = onnx.load_from_string(data).graph

    def shape(value) -> list[int]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") and i > 0 else -1 for i, d in enumerate(dims)]

    return {"inputs": {"dtype": "float32", "shape": shape(graph.input[0]), "names": None},
            "outputs": {"dtype": "float32", "shape": shape(graph.output[0])}, "task": None, "classes": None}


class ModelService:
    """Registry, gates, exports, deployments and batch predictions of every team."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, auth: AuthService, send_task: Sender):
        self.pool = pool
        self.blobs = blobs
        self.auth = auth
        self.send_task = send_task

    @contextmanager
    def _conn(self, *, transaction: bool = False) -> Iterator:
        """A pooled connection returning rows as dicts (put back as it was found)."""
        with self.pool.connection() as conn:
            conn.row_factory = dict_row
            try:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
            finally:
                conn.row_factory = tuple_row

    # -- models ----------------------------------------------------------------------------------------
    def create_model(self, principal: Principal, team: str, name: Any, *, description: Any = "",
                     gate_policy: Any = None) -> dict:
        """A new named model of ``team``.

        Raises:
            Conflict: the team already has a model of that name.
        """
        owner = self.auth.team(principal, team, Action.WRITE)
        name = _name(name)
        if not isinstance(description, str) or len(description) > 2000:
            raise Invalid("description must be a string of at most 2000 characters", field="description")
        policy = gate_rules.validate_policy(gate_policy)
        with self.pool.connection() as conn, conn.transaction():
            if policy.get("dataset"):
                self._check_dataset(conn, owner, policy["dataset"])
            found = conn.execute("SELECT 1 FROM models WHERE team_id = %s AND name = %s", (owner.id, name)).fetchone()
            if found:
                raise Conflict(f"team {team!r} already has a model named {name!r}", field="name")
            conn.execute("INSERT INTO models (id, team_id, name, description, gate_policy, created_by)"
                         " VALUES (%s, %s, %s, %s, %s, %s)",
                         (uuid.uuid4(), owner.id, name, description, Jsonb(policy), principal.user.id))
        return self.get_model(principal, team, name)

    def list_models(self, principal: Principal, team: str) -> list[dict]:
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            return conn.execute(
                "SELECT m.name, m.description, m.created_at, m.updated_at,"
                " (SELECT max(version) FROM model_versions v WHERE v.model_id = m.id) AS latest_version,"
                " (SELECT count(*) FROM model_versions v WHERE v.model_id = m.id) AS versions,"
                " COALESCE((SELECT jsonb_object_agg(a.alias, v.version) FROM model_aliases a"
                "   JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = m.id), '{}'::jsonb) AS aliases"
                " FROM models m WHERE m.team_id = %s ORDER BY m.updated_at DESC", (owner.id,)).fetchall()

    def get_model(self, principal: Principal, team: str, name: str) -> dict:
        """A model with its gate policy, aliases and promotion history."""
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            model = self._model(conn, owner, name)
            model["aliases"] = {r["alias"]: r["version"] for r in conn.execute(
                "SELECT a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id"
                " WHERE a.model_id = %s ORDER BY a.alias", (model["id"],))}
            model["promotions"] = conn.execute(
                "SELECT p.alias, fv.version AS from_version, tv.version AS to_version, p.outcome, p.gates,"
                " p.override_reason, u.username AS by, p.at FROM model_promotions p"
                " LEFT JOIN model_versions fv ON fv.id = p.from_version_id"
                " LEFT JOIN model_versions tv ON tv.id = p.to_version_id"
                " LEFT JOIN users u ON u.id = p.by_user WHERE p.model_id = %s ORDER BY p.id DESC LIMIT 50",
                (model["id"],)).fetchall()
        model["team"] = owner.name
        return model

    def set_policy(self, principal: Principal, team: str, name: str, policy: Any) -> dict:
        """Replace a model's gate policy (members may; the policy itself is what promotion enforces)."""
        owner = self.auth.team(principal, team, Action.WRITE)
        policy = gate_rules.validate_policy(policy)
        with self._conn(transaction=True) as conn:
            model = self._model(conn, owner, name, lock=True)
            if policy.get("dataset"):
                self._check_dataset(conn, owner, policy["dataset"])
            conn.execute("UPDATE models SET gate_policy = %s, updated_at = now() WHERE id = %s",
                         (Jsonb(policy), model["id"]))
        return self.get_model(principal, team, name)

    # -- versions --------------------------------------------------------------------------------------
    def register_file(self, principal: Principal, team: str, name: str, data: bytes, *, signature: Any = None,
                      description: str = "", create: bool = True) -> dict:
        """A new version from an uploaded TorchScript or ONNX file (refused unread when it is a pickle)."""
        owner = self.auth.team(principal, team, Action.WRITE)
        _name(name)
        if not data:
            raise Invalid("the model file is empty", field="file")
        if len(data) > MAX_MODEL_BYTES:
            raise Invalid(f"the model file is over {MAX_MODEL_BYTES} bytes", field="file")
        fmt = sniff_format(data)
        if signature is None:
            if fmt != "onnx":
                raise Invalid("send the signature (input/output shapes) with a TorchScript file", field="signature")
            signature = _onnx_signature(data)
        signature = validate_signature(signature)
        return self._add_version(principal, owner, name, fmt=fmt, data=data, signature=signature, run=None,
                                 lineage={}, description=description, create=create)

    def register_from_run(self, principal: Principal, run_id: str, name: Any, *, artifact: Any = "model.pt",
                          signature: Any = None, description: str = "") -> dict:
        """A new version from a run's logged model (the run's own token may do this): lineage from the run."""
        run_id = valid_uuid(run_id)
        if run_id is None:
            raise NotFound("run not found")
        _name(name)
        with self._conn() as conn:
            run = conn.execute(
                "SELECT r.id, r.team_id, t.name AS team, r.job_id, r.project, r.name, r.git FROM runs r"
                " JOIN teams t ON t.id = r.team_id WHERE r.id = %s", (run_id,)).fetchone()
            if run is None:
                raise NotFound(f"run {run_id} not found")
            scoped = principal.scope.get("run")
            owner = self.auth.team(principal, run["team"], Action.READ if scoped else Action.WRITE)
            if scoped is not None and scoped != str(run["id"]):
                raise Forbidden(f"this token belongs to run {scoped}; it may register only that run's models")
            art = conn.execute("SELECT path, kind, sha256, size, meta FROM run_artifacts WHERE run_id = %s AND path = %s",
                               (run_id, artifact)).fetchone()
            if art is None:
                raise NotFound(f"run {run_id} has no artifact {artifact!r}", field="artifact")
            job = None
            if run["job_id"]:
                job = conn.execute("SELECT id::text, spec FROM jobs WHERE id = %s", (run["job_id"],)).fetchone()
            datasets = conn.execute(
                "SELECT d.name AS dataset, v.number AS version, l.role FROM dataset_lineage l"
                " JOIN dataset_versions v ON v.id = l.dataset_version_id JOIN datasets d ON d.id = v.dataset_id"
                " WHERE l.consumer_kind = 'run' AND l.consumer_id = %s ORDER BY d.name", (run_id,)).fetchall()
        meta = art["meta"] or {}
        fmt = meta.get("format")
        if fmt not in ("torchscript", "onnx"):
            raise Invalid(f"artifact {artifact!r} is not a TorchScript or ONNX model (format {fmt!r}); log the model "
                          "with an example input so it can be traced", field="artifact")
        signature = validate_signature(signature if signature is not None else meta.get("signature") or {})
        spec = (job or {}).get("spec") or {}
        lineage = {"run_id": str(run["id"]), "run_name": run["name"], "project": run["project"],
                   "job_id": (job or {}).get("id"), "git": run["git"],
                   "code": {"sha256": (spec.get("code") or {}).get("sha256"), "entrypoint": spec.get("entrypoint"),
                            "trainer": spec.get("trainer")},
                   "datasets": datasets, "params": (spec.get("params") or None)}
        return self._add_version(principal, owner, name, fmt=fmt, data=None, sha256=art["sha256"], size=art["size"],
                                 signature=signature, run=str(run["id"]), lineage=lineage,
                                 description=description, create=True)

    def _add_version(self, principal: Principal, owner: Team, name: str, *, fmt: str, data: bytes | None,
                     signature: dict, run: str | None, lineage: dict, description: str, create: bool,
                     sha256: str | None = None, size: int | None = None) -> dict:
        if not isinstance(description, str) or len(description) > 2000:
            raise Invalid("description must be a string of at most 2000 characters", field="description")
        with self._conn(transaction=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (GC_LOCK,))
            if data is not None:
                sha256, _ = self.blobs.put_bytes(data)
                size = len(data)
            model = conn.execute("SELECT id, gate_policy FROM models WHERE team_id = %s AND name = %s FOR UPDATE",
                                 (owner.id, name)).fetchone()
            if model is None:
                if not create:
                    raise NotFound(f"model {name!r} not found in team {owner.name!r}")
                model = {"id": uuid.uuid4(), "gate_policy": {}}
                conn.execute("INSERT INTO models (id, team_id, name, created_by) VALUES (%s, %s, %s, %s)",
                             (model["id"], owner.id, name, principal.user.id))
            number = conn.execute("SELECT COALESCE(max(version), 0) + 1 AS n FROM model_versions WHERE model_id = %s",
                                  (model["id"],)).fetchone()["n"]
            version_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO model_versions (id, model_id, version, format, sha256, size, signature, run_id, lineage,"
                " description, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (version_id, model["id"], number, fmt, sha256, size, Jsonb(signature), run, Jsonb(lineage),
                 description, principal.user.id))
            conn.execute("UPDATE models SET updated_at = now() WHERE id = %s", (model["id"],))
            policy = model["gate_policy"] or {}
            evaluation = None
            if policy.get("auto_evaluate") and policy.get("dataset"):
                evaluation = self._queue_evaluation(conn, version_id, policy, "production", "auto", principal.user.id)
        if evaluation:
            self.send_task(MODEL_EVALUATE, [evaluation], "cpu")
        return self.get_version(principal, owner.name, name, str(number))

    def list_versions(self, principal: Principal, team: str, name: str) -> list[dict]:
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            model = self._model(conn, owner, name)
            return conn.execute(
                _VERSION_SELECT + " WHERE v.model_id = %s ORDER BY v.version DESC", (model["id"],)).fetchall()

    def get_version(self, principal: Principal, team: str, name: str, ref: Any) -> dict:
        """A version by number or alias, with its aliases, exports and evaluations."""
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            model = self._model(conn, owner, name)
            version = self._version(conn, model, ref)
            version["exports"] = conn.execute(
                "SELECT format, state, sha256, size, report, reason, created_at, finished_at FROM model_exports"
                " WHERE version_id = %s ORDER BY format", (version["id"],)).fetchall()
            version["evaluations"] = conn.execute(
                _EVAL_SELECT + " WHERE e.version_id = %s ORDER BY e.created_at DESC LIMIT 20", (version["id"],)).fetchall()
        version["model"] = name
        version["team"] = owner.name
        return version

    def version_file(self, principal: Principal, team: str, name: str, ref: Any, fmt: str | None = None
                     ) -> tuple[str, bytes]:
        """(filename, bytes) of a version's own file, or of one of its finished exports."""
        version = self.get_version(principal, team, name, ref)
        if fmt in (None, "", "source"):
            return f"{name}-v{version['version']}.{ 'onnx' if version['format'] == 'onnx' else 'pt'}", \
                self.blobs.get_bytes(version["sha256"])
        if fmt not in EXPORT_FORMATS:
            raise Invalid(f"format must be one of source, {', '.join(EXPORT_FORMATS)}", field="format")
        export = next((e for e in version["exports"] if e["format"] == fmt), None)
        if export is None or export["state"] != "succeeded":
            raise NotFound(f"{name} v{version['version']} has no finished {fmt} export"
                           + (f" (it {export['state']}: {export['reason']})" if export else "; export it first"))
        suffix = EXPORT_FILENAMES[fmt].split(".", 1)[1]
        return f"{name}-v{version['version']}.{suffix}", self.blobs.get_bytes(export["sha256"])

    # -- evaluations and gates -------------------------------------------------------------------------
    def evaluate(self, principal: Principal, team: str, name: str, ref: Any, *, target_alias: Any = "production"
                 ) -> dict:
        """Queue an evaluation of a version under the model's gate policy (and of the alias holder, when it
        has none on the same pinned data, so the regression gate has something to compare with)."""
        owner = self.auth.team(principal, team, Action.WRITE)
        target_alias = self._alias(target_alias)
        queued = []
        with self._conn(transaction=True) as conn:
            model = self._model(conn, owner, name)
            version = self._version(conn, model, ref)
            policy = model["gate_policy"] or {}
            if not policy.get("dataset"):
                raise Invalid(f"model {name!r} has no gate policy dataset to evaluate on; set the policy first "
                              "(PUT .../policy with {\"dataset\": {\"name\", \"version\"}})", field="policy.dataset")
            evaluation = self._queue_evaluation(conn, version["id"], policy, target_alias, "manual", principal.user.id)
            queued.append(evaluation)
            holder = self._holder(conn, model["id"], target_alias)
            if holder and holder["id"] != version["id"] and self._baseline(conn, holder["id"], policy) is None:
                pending = conn.execute("SELECT 1 FROM model_evaluations WHERE version_id = %s AND state IN"
                                       " ('queued', 'running') AND policy->'dataset' = %s",
                                       (holder["id"], Jsonb(policy["dataset"]))).fetchone()
                if not pending:
                    queued.append(self._queue_evaluation(conn, holder["id"], policy, target_alias, "auto",
                                                         principal.user.id))
        for evaluation_id in queued:
            self.send_task(MODEL_EVALUATE, [evaluation_id], "cpu")
        return self.get_evaluation(principal, queued[0])

    def get_evaluation(self, principal: Principal, evaluation_id: str) -> dict:
        evaluation_id = valid_uuid(evaluation_id)
        with self._conn() as conn:
            row = conn.execute(_EVAL_SELECT + " WHERE e.id = %s", (evaluation_id,)).fetchone() if evaluation_id else None
        if row is None:
            raise NotFound("evaluation not found")
        self.auth.team(principal, row.pop("team"))
        return row

    def gates(self, principal: Principal, team: str, name: str, ref: Any, alias: Any = "production") -> dict:
        """The gates as promotion would judge them now: ``{"evaluation", "gates", "passed", "holder"}``."""
        owner = self.auth.team(principal, team)
        alias = self._alias(alias)
        with self._conn() as conn:
            model = self._model(conn, owner, name)
            version = self._version(conn, model, ref)
            return self._judge_now(conn, model, version, alias)

    def promote(self, principal: Principal, team: str, name: str, ref: Any, alias: Any, *,
                override_reason: Any = None) -> dict:
        """Move ``alias`` to a version if its gates pass; else 409 with the failing gates, unless a team or site
        admin overrides with a reason (recorded)."""
        owner = self.auth.team(principal, team, Action.WRITE)
        alias = self._alias(alias)
        override = None
        if override_reason not in (None, ""):
            if not isinstance(override_reason, str) or len(override_reason.strip()) < 3:
                raise Invalid("override_reason must say why (at least a few words)", field="override_reason")
            if not (principal.is_admin or principal.role_in(owner.id) == "admin"):
                raise Forbidden("only a team admin may override failing gates")
            override = override_reason.strip()[:2000]
        with self._conn(transaction=True) as conn:
            model = self._model(conn, owner, name, lock=True)
            version = self._version(conn, model, ref)
            verdict = self._judge_now(conn, model, version, alias)
            holder = verdict["holder"]
            if holder and holder["id"] == version["id"]:
                raise Conflict(f"{name} v{version['version']} already holds {alias!r}", field="alias")
            outcome = "promoted" if verdict["passed"] else ("overridden" if override else "blocked")
            conn.execute(
                "INSERT INTO model_promotions (model_id, alias, from_version_id, to_version_id, evaluation_id, outcome,"
                " gates, override_reason, by_user) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (model["id"], alias, holder["id"] if holder else None, version["id"],
                 (verdict["evaluation"] or {}).get("id"), outcome, Jsonb(verdict["gates"]),
                 override or "", principal.user.id))
            if outcome != "blocked":
                conn.execute(
                    "INSERT INTO model_aliases (model_id, alias, version_id, moved_by) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (model_id, alias) DO UPDATE SET version_id = EXCLUDED.version_id,"
                    " moved_by = EXCLUDED.moved_by, moved_at = now()",
                    (model["id"], alias, version["id"], principal.user.id))
                conn.execute("UPDATE models SET updated_at = now() WHERE id = %s", (model["id"],))
        if outcome == "blocked":
            failing = [g for g in verdict["gates"] if not g["passed"]]
            raise Conflict(f"{name} v{version['version']} may not become {alias!r}: "
                           + "; ".join(f"{g['gate']}: {g['detail']}" for g in failing),
                           gates=verdict["gates"], reasons=[f"{g['gate']}: {g['detail']}" for g in failing])
        return {"model": name, "alias": alias, "version": version["version"], "outcome": outcome,
                "gates": verdict["gates"], "from_version": holder["version"] if holder else None}

    def evaluation_task(self, evaluation_id: str) -> dict | None:
        """Claim a queued evaluation for a worker (None when it is not queued any more)."""
        with self._conn(transaction=True) as conn:
            row = conn.execute(
                "UPDATE model_evaluations SET state = 'running', started_at = now() WHERE id = %s AND state = 'queued'"
                " RETURNING id::text, version_id, policy, target_alias", (evaluation_id,)).fetchone()
            if row is None:
                return None
            version = self._task_version(conn, row.pop("version_id"))
        return {**row, "team_id": version.pop("team_id"), "team": version.pop("team"), "version": version}

    def finish_evaluation(self, evaluation_id: str, results: dict) -> None:
        """Store an evaluation's results and the gates judged on them (against the alias holder now)."""
        with self._conn(transaction=True) as conn:
            row = conn.execute("SELECT e.version_id, e.policy, e.target_alias, v.model_id FROM model_evaluations e"
                               " JOIN model_versions v ON v.id = e.version_id WHERE e.id = %s AND e.state = 'running'"
                               " FOR UPDATE OF e", (evaluation_id,)).fetchone()
            if row is None:
                return
            baseline, label = self._baseline_for(conn, row["model_id"], row["version_id"], row["policy"],
                                                 row["target_alias"])
            verdict = gate_rules.judge(row["policy"], results, baseline=baseline, baseline_label=label,
                                       target_alias=row["target_alias"])
            conn.execute("UPDATE model_evaluations SET state = 'succeeded', results = %s, gates = %s, passed = %s,"
                         " finished_at = now() WHERE id = %s",
                         (Jsonb(results), Jsonb(verdict), gate_rules.passed(verdict), evaluation_id))

    def fail_evaluation(self, evaluation_id: str, reason: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE model_evaluations SET state = 'failed', reason = %s, finished_at = now()"
                         " WHERE id = %s AND state IN ('queued', 'running')", (reason[:2000], evaluation_id))

    # -- exports ---------------------------------------------------------------------------------------
    def request_export(self, principal: Principal, team: str, name: str, ref: Any, fmt: Any) -> dict:
        """Queue an export of a version (again, when it failed before); a finished one is returned as is."""
        owner = self.auth.team(principal, team, Action.WRITE)
        if fmt not in EXPORT_FORMATS:
            raise Invalid(f"format must be one of {', '.join(EXPORT_FORMATS)}", field="format")
        with self._conn(transaction=True) as conn:
            model = self._model(conn, owner, name)
            version = self._version(conn, model, ref)
            if fmt == "torchscript" and version["format"] == "onnx":
                raise Invalid("an ONNX version can't be converted to TorchScript", field="format")
            row = conn.execute(
                "INSERT INTO model_exports (version_id, format, state) VALUES (%s, %s, 'queued')"
                " ON CONFLICT (version_id, format) DO UPDATE SET state = 'queued', reason = '', created_at = now(),"
                " dispatched_at = now(), started_at = NULL, finished_at = NULL WHERE model_exports.state = 'failed'"
                " RETURNING format", (version["id"], fmt)).fetchone()
        if row is not None:
            self.send_task(MODEL_EXPORT, [str(version["id"]), fmt], "cpu")
        return next(e for e in self.get_version(principal, team, name, str(version["version"]))["exports"]
                    if e["format"] == fmt)

    def export_task(self, version_id: str, fmt: str) -> dict | None:
        with self._conn(transaction=True) as conn:
            row = conn.execute("UPDATE model_exports SET state = 'running', started_at = now() WHERE version_id = %s"
                               " AND format = %s"
                               " AND state = 'queued' RETURNING version_id", (version_id, fmt)).fetchone()
            if row is None:
                return None
            version = self._task_version(conn, row["version_id"])
            policy = conn.execute("SELECT gate_policy FROM models m JOIN model_versions v ON v.model_id = m.id"
                                  " WHERE v.id = %s", (version_id,)).fetchone()["gate_policy"]
        return {"team_id": version.pop("team_id"), "team": version.pop("team"), "version": version,
                "policy": policy or {}}

    def finish_export(self, version_id: str, fmt: str, data: bytes, report: dict) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (GC_LOCK,))
            sha, _ = self.blobs.put_bytes(data)
            conn.execute("UPDATE model_exports SET state = 'succeeded', sha256 = %s, size = %s, report = %s,"
                         " finished_at = now() WHERE version_id = %s AND format = %s AND state = 'running'",
                         (sha, len(data), Jsonb(report), version_id, fmt))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "export"))  # served versions may now use ONNX

    def fail_export(self, version_id: str, fmt: str, reason: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE model_exports SET state = 'failed', reason = %s, finished_at = now()"
                         " WHERE version_id = %s AND format = %s AND state IN ('queued', 'running')",
                         (reason[:2000], version_id, fmt))

    # -- deployments -----------------------------------------------------------------------------------
    def create_deployment(self, principal: Principal, team: str, body: Any) -> dict:
        """A new deployment: ``{"name", "routes": [{"model", "version", "weight"}], "shadow": {"model",
        "version"} | null, "max_batch_size", "max_wait_ms", "log_sample"}``."""
        owner = self.auth.team(principal, team, Action.WRITE)
        if not isinstance(body, dict):
            raise Invalid("send a JSON object", field="body")
        name = _name(body.get("name"), "deployment name")
        with self._conn(transaction=True) as conn:
            spec = self._deployment_spec(conn, owner, body, base=None)
            if conn.execute("SELECT 1 FROM deployments WHERE name = %s", (name,)).fetchone():
                raise Conflict(f"a deployment named {name!r} already exists", field="name")
            deployment_id = uuid.uuid4()
            conn.execute("INSERT INTO deployments (id, team_id, name, spec, created_by) VALUES (%s, %s, %s, %s, %s)",
                         (deployment_id, owner.id, name, Jsonb(spec), principal.user.id))
            self._revision(conn, deployment_id, 1, spec, body.get("note") or "created", principal)
        self._export_for_serving(spec)
        return self.get_deployment(principal, name)

    def update_deployment(self, principal: Principal, name: str, body: Any) -> dict:
        """Change routes, weights, shadow or batching: a new revision the serving processes pick up."""
        if not isinstance(body, dict):
            raise Invalid("send a JSON object", field="body")
        with self._conn(transaction=True) as conn:
            row, owner = self._deployment(conn, principal, name, Action.WRITE, lock=True)
            spec = self._deployment_spec(conn, owner, body, base=row["spec"])
            if spec == row["spec"]:
                raise Invalid("nothing changes in this update", field="body")
            self._bump(conn, row, spec, body.get("note") or "updated", principal)
        self._export_for_serving(spec)
        return self.get_deployment(principal, name)

    def rollback_deployment(self, principal: Principal, name: str, revision: Any = None) -> dict:
        """Go back to an earlier revision's spec (default: the one before the current), as a new revision."""
        with self._conn(transaction=True) as conn:
            row, _ = self._deployment(conn, principal, name, Action.WRITE, lock=True)
            if revision is None:
                revision = row["revision"] - 1
            if isinstance(revision, bool) or not isinstance(revision, int) or not 1 <= revision < row["revision"]:
                raise Invalid(f"revision must be an earlier revision of {name!r} (1..{row['revision'] - 1})"
                              if row["revision"] > 1 else f"{name!r} has no earlier revision", field="revision")
            old = conn.execute("SELECT spec FROM deployment_revisions WHERE deployment_id = %s AND revision = %s",
                               (row["id"], revision)).fetchone()
            self._bump(conn, row, old["spec"], f"rollback to revision {revision}", principal)
        return self.get_deployment(principal, name)

    def delete_deployment(self, principal: Principal, name: str) -> None:
        with self._conn(transaction=True) as conn:
            row, _ = self._deployment(conn, principal, name, Action.WRITE, lock=True)
            conn.execute("DELETE FROM deployments WHERE id = %s", (row["id"],))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(row["id"])))

    def list_deployments(self, principal: Principal, team: str) -> list[dict]:
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            rows = conn.execute("SELECT id, name, spec, revision, created_at, updated_at FROM deployments"
                                " WHERE team_id = %s ORDER BY name", (owner.id,)).fetchall()
            return [self._describe(conn, row, owner.name) for row in rows]

    def get_deployment(self, principal: Principal, name: str) -> dict:
        with self._conn() as conn:
            row, owner = self._deployment(conn, principal, name, Action.READ)
            out = self._describe(conn, row, owner.name)
            out["revisions"] = conn.execute(
                "SELECT r.revision, r.spec, r.note, u.username AS by, r.at FROM deployment_revisions r"
                " LEFT JOIN users u ON u.id = r.by_user WHERE r.deployment_id = %s ORDER BY r.revision DESC LIMIT 50",
                (row["id"],)).fetchall()
        return out

    def prediction_logs(self, principal: Principal, name: str, *, limit: Any = 50, shadow: bool | None = None
                        ) -> list[dict]:
        if isinstance(limit, str) and limit.isdigit():
            limit = int(limit)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise Invalid("limit must be 1..1000", field="limit")
        with self._conn() as conn:
            row, _ = self._deployment(conn, principal, name, Action.READ)
            where = "" if shadow is None else " AND p.shadow = %s"
            args = (row["id"],) + (() if shadow is None else (shadow,)) + (limit,)
            return conn.execute(
                "SELECT p.id, m.name AS model, v.version, p.shadow, p.request_id, p.at, p.latency_ms, p.inputs,"
                " p.outputs FROM prediction_logs p LEFT JOIN model_versions v ON v.id = p.version_id"
                " LEFT JOIN models m ON m.id = v.model_id WHERE p.deployment_id = %s" + where +
                " ORDER BY p.id DESC LIMIT %s", args).fetchall()

    # -- batch prediction ------------------------------------------------------------------------------
    def create_batch(self, principal: Principal, team: str, body: Any) -> dict:
        """Score a dataset version with a model version: ``{"model", "version", "dataset", "dataset_version",
        "output"}``; the result becomes a new version of dataset ``output``."""
        owner = self.auth.team(principal, team, Action.WRITE)
        if not isinstance(body, dict):
            raise Invalid("send a JSON object", field="body")
        unknown = sorted(set(body) - {"model", "version", "dataset", "dataset_version", "output"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        output = _name(body.get("output") or f"{body.get('dataset')}-predictions", "output dataset name")
        with self._conn(transaction=True) as conn:
            model = self._model(conn, owner, _name(body.get("model")))
            version = self._version(conn, model, body.get("version", "latest"))
            number = self._check_dataset(conn, owner, {"name": body.get("dataset"),
                                                       "version": body.get("dataset_version", "latest")})
            batch_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO batch_predictions (id, team_id, version_id, source, output, state, created_by)"
                " VALUES (%s, %s, %s, %s, %s, 'queued', %s)",
                (batch_id, owner.id, version["id"], Jsonb({"dataset": body["dataset"], "version": number}),
                 Jsonb({"dataset": output}), principal.user.id))
        self.send_task(MODEL_BATCH_PREDICT, [str(batch_id)], "cpu")
        return self.get_batch(principal, str(batch_id))

    def get_batch(self, principal: Principal, batch_id: str) -> dict:
        batch_id = valid_uuid(batch_id)
        with self._conn() as conn:
            row = conn.execute(
                "SELECT b.id::text, t.name AS team, m.name AS model, v.version, b.source, b.output, b.state, b.rows,"
                " b.reason, b.created_at, b.finished_at FROM batch_predictions b JOIN teams t ON t.id = b.team_id"
                " JOIN model_versions v ON v.id = b.version_id JOIN models m ON m.id = v.model_id WHERE b.id = %s",
                (batch_id,)).fetchone() if batch_id else None
        if row is None:
            raise NotFound("batch prediction not found")
        self.auth.team(principal, row["team"])
        return row

    def list_batches(self, principal: Principal, team: str) -> list[dict]:
        owner = self.auth.team(principal, team)
        with self._conn() as conn:
            return conn.execute(
                "SELECT b.id::text, m.name AS model, v.version, b.source, b.output, b.state, b.rows, b.reason,"
                " b.created_at, b.finished_at FROM batch_predictions b JOIN model_versions v ON v.id = b.version_id"
                " JOIN models m ON m.id = v.model_id WHERE b.team_id = %s ORDER BY b.created_at DESC LIMIT 100",
                (owner.id,)).fetchall()

    def batch_task(self, batch_id: str) -> dict | None:
        with self._conn(transaction=True) as conn:
            row = conn.execute("UPDATE batch_predictions SET state = 'running', started_at = now() WHERE id = %s"
                               " AND state = 'queued'"
                               " RETURNING id::text, team_id, version_id, source, output, created_by",
                               (batch_id,)).fetchone()
            if row is None:
                return None
            version = self._task_version(conn, row.pop("version_id"))
        row["team"] = version.pop("team")
        version.pop("team_id")
        return {**row, "version": version}

    def finish_batch(self, batch_id: str, output_version: int, rows: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE batch_predictions SET state = 'succeeded', rows = %s, finished_at = now(),"
                         " output = output || jsonb_build_object('version', %s::int)"
                         " WHERE id = %s AND state = 'running'", (rows, output_version, batch_id))

    def fail_batch(self, batch_id: str, reason: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE batch_predictions SET state = 'failed', reason = %s, finished_at = now()"
                         " WHERE id = %s AND state IN ('queued', 'running')", (reason[:2000], batch_id))

    # -- recovery --------------------------------------------------------------------------------------
    def sweep(self, *, resend_after_s: float = 120.0, running_limit_s: float = 3600.0) -> dict[str, int]:
        """Re-send model work still queued after ``resend_after_s`` (a lost message) and fail work running for
        longer than ``running_limit_s`` (its worker died mid-way; it can be asked for again)."""
        resend = f"now() - make_interval(secs => {float(resend_after_s)})"
        stale = f"now() - make_interval(secs => {float(running_limit_s)})"
        lost = "the worker doing it stopped before it finished; ask again"
        with self._conn(transaction=True) as conn:
            evaluations = conn.execute(
                "UPDATE model_evaluations SET dispatched_at = now() WHERE state = 'queued' AND dispatched_at < "
                f"{resend} RETURNING id::text").fetchall()
            exports = conn.execute(
                f"UPDATE model_exports SET dispatched_at = now() WHERE state = 'queued' AND dispatched_at < {resend}"
                " RETURNING version_id::text, format").fetchall()
            batches = conn.execute(
                f"UPDATE batch_predictions SET dispatched_at = now() WHERE state = 'queued' AND dispatched_at < "
                f"{resend} RETURNING id::text").fetchall()
            failed = sum(conn.execute(f"UPDATE {table} SET state = 'failed', reason = %s, finished_at = now()"
                                      f" WHERE state = 'running' AND started_at < {stale}", (lost,)).rowcount
                         for table in ("model_evaluations", "model_exports", "batch_predictions"))
        for row in evaluations:
            self.send_task(MODEL_EVALUATE, [row["id"]], "cpu")
        for row in exports:
            self.send_task(MODEL_EXPORT, [row["version_id"], row["format"]], "cpu")
        for row in batches:
            self.send_task(MODEL_BATCH_PREDICT, [row["id"]], "cpu")
        return {"model_work_resent": len(evaluations) + len(exports) + len(batches), "model_work_failed": failed}

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _alias(alias: Any) -> str:
        if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias == "latest":
            raise Invalid("alias must be 1-40 characters of a-z, 0-9, '_', '-' starting with a letter "
                          "('latest' is reserved)", field="alias")
        return alias

    @staticmethod
    def _model(conn, owner: Team, name: Any, *, lock: bool = False) -> dict:
        row = conn.execute("SELECT id, name, description, gate_policy, created_at, updated_at FROM models"
                           " WHERE team_id = %s AND name = %s" + (" FOR UPDATE" if lock else ""),
                           (owner.id, name if isinstance(name, str) else "")).fetchone()
        if row is None:
            raise NotFound(f"model {name!r} not found in team {owner.name!r}")
        return row

    @staticmethod
    def _version(conn, model: dict, ref: Any) -> dict:
        """A version by number, ``latest`` or alias."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            ref = str(ref)
        if not isinstance(ref, str) or not ref:
            raise Invalid("version must be a number, 'latest' or an alias", field="version")
        ref = ref[1:] if ref[:1] == "v" and ref[1:].isdigit() else ref
        if ref.isdigit():
            row = conn.execute(_VERSION_SELECT + " WHERE v.model_id = %s AND v.version = %s",
                               (model["id"], int(ref))).fetchone()
        elif ref == "latest":
            row = conn.execute(_VERSION_SELECT + " WHERE v.model_id = %s ORDER BY v.version DESC LIMIT 1",
                               (model["id"],)).fetchone()
        else:
            row = conn.execute(_VERSION_SELECT + " JOIN model_aliases a ON a.version_id = v.id"
                               " WHERE v.model_id = %s AND a.alias = %s", (model["id"], ref)).fetchone()
        if row is None:
            raise NotFound(f"model {model['name']!r} has no version {ref!r}", field="version")
        return row

    @staticmethod
    def _holder(conn, model_id, alias: str) -> dict | None:
        return conn.execute("SELECT v.id, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id"
                            " WHERE a.model_id = %s AND a.alias = %s", (model_id, alias)).fetchone()

    @staticmethod
    def _baseline(conn, version_id, policy: dict) -> dict | None:
        """The latest succeeded evaluation of a version on the policy's pinned data."""
        return conn.execute(
            "SELECT id::text, results FROM model_evaluations WHERE version_id = %s AND state = 'succeeded'"
            " AND policy->'dataset' = %s ORDER BY finished_at DESC LIMIT 1",
            (version_id, Jsonb(policy.get("dataset")))).fetchone()

    def _baseline_for(self, conn, model_id, version_id, policy: dict, alias: str) -> tuple[dict | None, str | None]:
        holder = self._holder(conn, model_id, alias)
        if holder is None or holder["id"] == version_id:
            return None, None
        label = f"v{holder['version']} ({alias})"
        found = self._baseline(conn, holder["id"], policy)
        if found is None:
            return {"missing": f"{label} has no evaluation on the pinned data yet; evaluate it"}, label
        return found["results"], label

    def _judge_now(self, conn, model: dict, version: dict, alias: str) -> dict:
        policy = model["gate_policy"] or {}
        holder = self._holder(conn, model["id"], alias)
        if not policy:
            return {"evaluation": None, "gates": [], "passed": True, "holder": holder,
                    "note": "this model has no gate policy: promotion is not gated"}
        evaluation = None
        if policy.get("dataset"):
            evaluation = conn.execute(
                _EVAL_SELECT + " WHERE e.version_id = %s AND e.state = 'succeeded' AND e.policy->'dataset' = %s"
                " ORDER BY e.finished_at DESC LIMIT 1", (version["id"], Jsonb(policy["dataset"]))).fetchone()
        if evaluation is None:
            pending = conn.execute("SELECT state FROM model_evaluations WHERE version_id = %s AND state IN"
                                   " ('queued', 'running') LIMIT 1", (version["id"],)).fetchone()
            detail = ("its evaluation is still " + pending["state"] if pending else
                      "no evaluation on the pinned data yet; evaluate it" if policy.get("dataset") else
                      "the policy pins no dataset to evaluate on")
            return {"evaluation": None, "holder": holder, "passed": False,
                    "gates": [{"gate": "evaluated", "passed": False, "detail": detail}]}
        baseline, label = self._baseline_for(conn, model["id"], version["id"], policy, alias)
        verdict = gate_rules.judge(policy, evaluation["results"] or {}, baseline=baseline, baseline_label=label,
                                   target_alias=alias)
        evaluation.pop("team", None)
        return {"evaluation": evaluation, "gates": verdict, "passed": gate_rules.passed(verdict), "holder": holder}

    def _queue_evaluation(self, conn, version_id, policy: dict, alias: str, trigger: str, user_id: int | None) -> str:
        evaluation_id = str(uuid.uuid4())
        conn.execute("INSERT INTO model_evaluations (id, version_id, state, trigger, policy, target_alias, created_by)"
                     " VALUES (%s, %s, 'queued', %s, %s, %s, %s)",
                     (evaluation_id, version_id, trigger, Jsonb(policy), alias, user_id))
        return evaluation_id

    @staticmethod
    def _task_version(conn, version_id) -> dict:
        return conn.execute(
            "SELECT v.id::text, m.name AS model, v.version, v.format, v.sha256, v.signature, m.team_id, t.name AS team"
            " FROM model_versions v JOIN models m ON m.id = v.model_id JOIN teams t ON t.id = m.team_id"
            " WHERE v.id = %s", (version_id,)).fetchone()

    @staticmethod
    def _check_dataset(conn, owner: Team, pin: dict) -> int:
        """The pinned dataset version's number, checked to exist in the team."""
        name, ref = pin.get("name"), pin.get("version")
        if not isinstance(name, str) or not name:
            raise Invalid("name the dataset", field="dataset")
        dataset = conn.execute("SELECT id FROM datasets WHERE team_id = %s AND name = %s", (owner.id, name)).fetchone()
        if dataset is None:
            raise NotFound(f"dataset {name!r} not found in team {owner.name!r}", field="dataset")
        dataset_id = dataset["id"] if isinstance(dataset, dict) else dataset[0]
        if ref in (None, "latest"):
            row = conn.execute("SELECT max(number) FROM dataset_versions WHERE dataset_id = %s", (dataset_id,)).fetchone()
            number = row["max"] if isinstance(row, dict) else row[0]
        else:
            number = int(ref) if isinstance(ref, (int, str)) and str(ref).isdigit() else None
            if number is not None and not conn.execute("SELECT 1 FROM dataset_versions WHERE dataset_id = %s"
                                                       " AND number = %s", (dataset_id, number)).fetchone():
                number = None
        if number is None:
            raise NotFound(f"dataset {name!r} has no version {ref!r}", field="dataset_version")
        return number

    def _deployment(self, conn, principal: Principal, name: Any, action: Action, *, lock: bool = False
                    ) -> tuple[dict, Team]:
        row = conn.execute("SELECT d.id, d.name, d.team_id, t.name AS team, d.spec, d.revision, d.created_at,"
                           " d.updated_at FROM deployments d JOIN teams t ON t.id = d.team_id WHERE d.name = %s"
                           + (" FOR UPDATE OF d" if lock else ""), (name if isinstance(name, str) else "",)).fetchone()
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        try:
            owner = self.auth.team(principal, row["team"], action)
        except NotFound:
            raise NotFound(f"deployment {name!r} not found") from None
        return row, owner

    def _deployment_spec(self, conn, owner: Team, body: dict, *, base: dict | None) -> dict:
        unknown = sorted(set(body) - set(_DEPLOY_KEYS))
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(_DEPLOY_KEYS)}", field=unknown[0])
        spec = dict(base or {"routes": [], "shadow": None, "max_batch_size": 32, "max_wait_ms": 2.0,
                             "log_sample": 1.0})
        if "routes" in body or base is None:
            routes = body.get("routes")
            if not isinstance(routes, list) or not routes or len(routes) > 10:
                raise Invalid("routes must list 1-10 {\"model\", \"version\", \"weight\"}", field="routes")
            resolved, seen = [], set()
            for i, route in enumerate(routes):
                if not isinstance(route, dict) or set(route) - {"model", "version", "weight"}:
                    raise Invalid(f"routes[{i}] must be {{\"model\", \"version\", \"weight\"}}", field=f"routes[{i}]")
                weight = route.get("weight", 100 if len(routes) == 1 else None)
                if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                    raise Invalid(f"routes[{i}].weight must be a whole number 0-100", field=f"routes[{i}].weight")
                version = self._route_version(conn, owner, route, f"routes[{i}]")
                if version["id"] in seen:
                    raise Invalid(f"routes[{i}] repeats a version", field=f"routes[{i}]")
                seen.add(version["id"])
                resolved.append({"version_id": version["id"], "weight": weight})
            total = sum(r["weight"] for r in resolved)
            if total != 100:
                raise Invalid(f"traffic weights must add up to 100, not {total}", field="routes")
            spec["routes"] = resolved
        if "shadow" in body:
            shadow = body["shadow"]
            spec["shadow"] = None if shadow is None else self._route_version(conn, owner, shadow, "shadow")["id"]
            if spec["shadow"] and spec["shadow"] in {r["version_id"] for r in spec["routes"]}:
                raise Invalid("the shadow version also takes live traffic; shadow another version", field="shadow")
        for key, low, high, kind in (("max_batch_size", 1, 1024, int), ("max_wait_ms", 0, 1000, (int, float)),
                                     ("log_sample", 0, 1, (int, float))):
            if key in body:
                value = body[key]
                if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                    raise Invalid(f"{key} must be a number from {low} to {high}", field=key)
                spec[key] = value
        return spec

    def _route_version(self, conn, owner: Team, route: Any, field: str) -> dict:
        if not isinstance(route, dict) or not isinstance(route.get("model"), str):
            raise Invalid(f"{field} must name a model and version: {{\"model\", \"version\"}}", field=field)
        model = conn.execute("SELECT id, name FROM models WHERE team_id = %s AND name = %s",
                             (owner.id, route["model"])).fetchone()
        if model is None:
            raise NotFound(f"{field}: model {route['model']!r} not found in team {owner.name!r}", field=field)
        version = self._version(conn, model, route.get("version", "latest"))
        version["id"] = str(version["id"])
        return version

    def _export_for_serving(self, spec: dict) -> None:
        """Queue an ONNX export of each deployed TorchScript version that has none: the serving processes
        switch to it (ONNX Runtime) when it is done."""
        ids = [r["version_id"] for r in spec["routes"]] + ([spec["shadow"]] if spec.get("shadow") else [])
        with self._conn(transaction=True) as conn:
            queued = conn.execute(
                "INSERT INTO model_exports (version_id, format, state) SELECT id, 'onnx', 'queued' FROM model_versions"
                " WHERE id = ANY(%s::uuid[]) AND format = 'torchscript' ON CONFLICT (version_id, format) DO NOTHING"
                " RETURNING version_id::text", (ids,)).fetchall()
        for row in queued:
            self.send_task(MODEL_EXPORT, [row["version_id"], "onnx"], "cpu")

    def _bump(self, conn, row: dict, spec: dict, note: str, principal: Principal) -> None:
        revision = row["revision"] + 1
        conn.execute("UPDATE deployments SET spec = %s, revision = %s, updated_at = now() WHERE id = %s",
                     (Jsonb(spec), revision, row["id"]))
        self._revision(conn, row["id"], revision, spec, note, principal)

    @staticmethod
    def _revision(conn, deployment_id, revision: int, spec: dict, note: str, principal: Principal) -> None:
        conn.execute("INSERT INTO deployment_revisions (deployment_id, revision, spec, note, by_user)"
                     " VALUES (%s, %s, %s, %s, %s)", (deployment_id, revision, Jsonb(spec), str(note)[:500],
                                                      principal.user.id))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(deployment_id)))

    @staticmethod
    def _describe(conn, row: dict, team: str) -> dict:
        spec = row["spec"]
        ids = [r["version_id"] for r in spec["routes"]] + ([spec["shadow"]] if spec.get("shadow") else [])
        names = {str(r["id"]): (r["model"], r["version"]) for r in conn.execute(
            "SELECT v.id, m.name AS model, v.version FROM model_versions v JOIN models m ON m.id = v.model_id"
            " WHERE v.id = ANY(%s::uuid[])", (ids,))}

        def ref(version_id: str) -> dict:
            model, version = names.get(version_id, (None, None))
            return {"model": model, "version": version, "version_id": version_id}

        return {"name": row["name"], "team": team, "revision": row["revision"],
                "routes": [{**ref(r["version_id"]), "weight": r["weight"]} for r in spec["routes"]],
                "shadow": ref(spec["shadow"]) if spec.get("shadow") else None,
                "max_batch_size": spec["max_batch_size"], "max_wait_ms": spec["max_wait_ms"],
                "log_sample": spec["log_sample"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


_VERSION_SELECT = ("SELECT v.id, v.version, v.format, v.sha256, v.size, v.signature, v.run_id::text AS run_id,"
                   " v.lineage, v.description, v.created_at,"
                   " (SELECT COALESCE(array_agg(a2.alias ORDER BY a2.alias), '{}') FROM model_aliases a2"
                   "  WHERE a2.version_id = v.id) AS aliases FROM model_versions v")
_EVAL_SELECT = ("SELECT e.id::text, v.version, t.name AS team, e.state, e.trigger, e.policy, e.target_alias,"
                " e.results, e.gates, e.passed, e.reason, e.created_at, e.started_at, e.finished_at"
                " FROM model_evaluations e JOIN model_versions v ON v.id = e.version_id"
                " JOIN models m ON m.id = v.model_id JOIN teams t ON t.id = m.team_id")
