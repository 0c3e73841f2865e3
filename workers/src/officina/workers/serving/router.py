"""Deployments loaded into an immutable routing table, kept current from Postgres.

A background thread LISTENs on ``officina_deployments`` (the model service NOTIFYs there on every
change) and also polls every ``serving_reload_s``. A changed deployment is built off to the side,
models loaded, batchers started, and only then is the table reference swapped: a request reads
``router.table`` once, so one already under way finishes on the versions it started with.
Batchers nobody routes to any more are closed, which drains what they hold; a straggler submitting
to a closed batcher is predicted in its own thread. Requests are never dropped by a reload.
"""
from __future__ import annotations

import bisect
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Team
from officina.platform.errors import Invalid
from officina.platform.models.signature import validate_signature
from officina.platform.storage.blobs import BlobStore
from officina.workers.models import runtime
from officina.workers.serving.batcher import IN_FLIGHT, Batcher

logger = logging.getLogger(__name__)

CHANNEL = "officina_deployments"
RETRY_FAILED_S = 15.0  # a deployment revision that failed to load is tried again after this long

_DEPLOYMENTS = """
SELECT d.id::text, d.name, d.revision, d.spec, t.id, t.name, t.description, t.created_at,
       (SELECT count(*) FROM model_exports e WHERE e.format = 'onnx' AND e.state = 'succeeded'
          AND e.version_id::text IN (SELECT r->>'version_id' FROM jsonb_array_elements(d.spec->'routes') r
                                     UNION ALL SELECT d.spec->>'shadow')) AS onnx_ready
FROM deployments d JOIN teams t ON t.id = d.team_id
"""
_VERSIONS = """
SELECT v.id::text, v.version, v.format, v.sha256, v.signature, m.name, m.team_id, e.sha256
FROM model_versions v
JOIN models m ON m.id = v.model_id
LEFT JOIN model_exports e ON e.version_id = v.id AND e.format = 'onnx' AND e.state = 'succeeded'
WHERE v.id = ANY(%s::uuid[])
"""


@dataclass(frozen=True)
class LoadedVersion:
    """One model version ready to predict, with its batcher."""

    version_id: str
    model: str
    version: int
    signature: dict
    runtime: str
    file_format: str  # what was loaded: the version's own file or its ONNX export ("onnx export")
    batcher: Batcher

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class Deployment:
    """A loaded deployment: weighted routes, an optional shadow, batching and log settings."""

    id: str
    name: str
    team: Team
    revision: int
    spec: dict
    routes: tuple[LoadedVersion, ...]
    weights: tuple[float, ...]
    shadow: LoadedVersion | None
    log_sample: float
    onnx_ready: int = 0  # how many of its versions had an ONNX export when loaded (a new one reloads it)
    _cumulative: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        total, cumulative = 0.0, []
        for weight in self.weights:
            total += weight
            cumulative.append(total)
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    def choose(self, rand: Callable[[], float] = random.random) -> LoadedVersion:
        """A route picked at random in proportion to its weight (the canary split)."""
        if len(self.routes) == 1:
            return self.routes[0]
        point = rand() * self._cumulative[-1]
        return self.routes[min(bisect.bisect_right(self._cumulative, point), len(self.routes) - 1)]

    def describe(self) -> dict:
        """JSON for ``GET /v1/deployments/<name>``."""
        def version(v: LoadedVersion) -> dict:
            return {"version_id": v.version_id, "model": v.model, "version": v.version, "runtime": v.runtime,
                    "file": v.file_format}

        return {"name": self.name, "team": self.team.name, "revision": self.revision,
                "signature": self.routes[0].signature,
                "routes": [{**version(v), "weight": w} for v, w in zip(self.routes, self.weights)],
                "shadow": version(self.shadow) if self.shadow else None,
                "max_batch_size": self.routes[0].batcher.max_batch_size,
                "max_wait_ms": self.routes[0].batcher.max_wait_s * 1000.0, "log_sample": self.log_sample}


def parse_spec(spec: object) -> dict:
    """A deployment spec, checked, with defaults filled in.

    Raises:
        Invalid: no routes, weights that are not positive numbers, bad batching or sampling values.
    """
    if not isinstance(spec, dict):
        raise Invalid("deployment spec must be an object", spec="invalid")
    routes = spec.get("routes")
    if not isinstance(routes, list) or not routes:
        raise Invalid("deployment spec needs at least one route", spec="routes")
    parsed = []
    for route in routes:
        weight = route.get("weight", 100) if isinstance(route, dict) else None
        if not isinstance(route, dict) or not isinstance(route.get("version_id"), str) \
                or isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise Invalid("each route needs a version_id and a weight >= 0", spec="routes")
        parsed.append({"version_id": route["version_id"], "weight": float(weight)})
    if sum(r["weight"] for r in parsed) <= 0:
        raise Invalid("route weights must not all be zero", spec="routes")
    max_batch_size, max_wait_ms = spec.get("max_batch_size", 32), spec.get("max_wait_ms", 2)
    log_sample = spec.get("log_sample", 1.0)
    for key, value, low in (("max_batch_size", max_batch_size, 1), ("max_wait_ms", max_wait_ms, 0),
                            ("log_sample", log_sample, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise Invalid(f"deployment {key} must be a number >= {low}", spec=key)
    shadow = spec.get("shadow")
    if shadow is not None and not isinstance(shadow, str):
        raise Invalid("deployment shadow must be a version id or null", spec="shadow")
    return {"routes": parsed, "shadow": shadow, "max_batch_size": int(max_batch_size),
            "max_wait_ms": float(max_wait_ms), "log_sample": min(1.0, float(log_sample))}


class Router:
    """Holds ``table`` (name -> Deployment) and keeps it in step with the database."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, database_url: str, *, reload_s: float = 1.0):
        self.pool, self.blobs, self.database_url, self.reload_s = pool, blobs, database_url, reload_s
        self.table: dict[str, Deployment] = {}
        self.errors: dict[str, str] = {}  # deployment name -> why its latest spec is not loaded
        self.loading: frozenset[str] = frozenset()  # known in the database, not loaded yet
        self._predictors: dict[tuple, runtime.Predictor] = {}
        self._batchers: dict[tuple, Batcher] = {}
        self._failed: dict[str, tuple] = {}  # name -> (id, revision, spec, monotonic time of the failure)
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load what is deployed now (errors are logged), then follow changes in a thread."""
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - the thread retries; the server still starts
            logger.exception("initial deployment load failed; retrying in the background")
        self._thread = threading.Thread(target=self._follow, name="deployment-router", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for batcher in list(self._batchers.values()):
            batcher.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        self.refresh()
                        for _ in conn.notifies(timeout=self.reload_s, stop_after=1):
                            pass
            except Exception:  # noqa: BLE001 - keep serving the table we have; reconnect
                logger.warning("deployment reload failed; keeping the loaded deployments", exc_info=True)
                self._stop.wait(self.reload_s)

    # -- reload -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Compare the database with the table; build what changed and swap the table once."""
        with self._refresh_lock:
            with self.pool.connection() as conn:
                rows = conn.execute(_DEPLOYMENTS).fetchall()
            current = self.table
            table: dict[str, Deployment] = {}
            errors: dict[str, str] = {}
            changed: list[tuple] = []
            for row in rows:
                dep_id, name, revision, spec = row[0], row[1], row[2], row[3]
                old = current.get(name)
                if old is not None and old.id == dep_id and old.revision == revision and old.spec == spec \
                        and old.onnx_ready == row[8]:
                    table[name] = old
                else:
                    changed.append(row)
            loading = frozenset(r[1] for r in changed)
            if loading:
                self.loading = loading
            now = time.monotonic()
            for row in changed:
                name = row[1]
                failed = self._failed.get(name)
                if failed and failed[:3] == (row[0], row[2], row[3]) and now - failed[3] < RETRY_FAILED_S:
                    errors[name] = self.errors.get(name, "not loaded")
                    if name in current and current[name].id == row[0]:
                        table[name] = current[name]
                    continue
                try:
                    table[name] = self._build(row)
                    self._failed.pop(name, None)
                    logger.info("deployment %s revision %s loaded", name, row[2])
                except Exception as exc:  # noqa: BLE001 - one bad deployment must not block the others
                    message = exc.message if isinstance(exc, Invalid) else f"{type(exc).__name__}: {exc}"
                    errors[name] = message
                    self._failed[name] = (row[0], row[2], row[3], now)
                    logger.warning("deployment %s revision %s not loaded: %s", name, row[2], message)
                    if name in current and current[name].id == row[0]:
                        table[name] = current[name]  # keep serving the previous revision
            self.table = table  # the swap: one reference assignment
            self.errors = errors
            self.loading = frozenset(n for n in loading if n not in table)
            self._retire(table)

    def _build(self, row: tuple) -> Deployment:
        dep_id, name, revision, raw_spec, team_id, team_name, team_description, team_created, onnx_ready = row
        spec = parse_spec(raw_spec)
        wanted = [r["version_id"] for r in spec["routes"]] + ([spec["shadow"]] if spec["shadow"] else [])
        with self.pool.connection() as conn:
            found = {r[0]: r for r in conn.execute(_VERSIONS, (wanted,)).fetchall()}
        batching = (spec["max_batch_size"], spec["max_wait_ms"])

        def load(version_id: str) -> LoadedVersion:
            record = found.get(version_id)
            if record is None or record[6] != team_id:
                raise Invalid(f"model version {version_id} not found in the deployment's team", spec="routes")
            return self._load_version(record, batching)

        routes = tuple(load(r["version_id"]) for r in spec["routes"])
        return Deployment(
            id=dep_id, name=name, revision=revision, spec=raw_spec,
            team=Team(id=team_id, name=team_name, description=team_description, created_at=team_created),
            routes=routes, weights=tuple(r["weight"] for r in spec["routes"]),
            shadow=load(spec["shadow"]) if spec["shadow"] else None, log_sample=spec["log_sample"],
            onnx_ready=onnx_ready)

    def _load_version(self, record: tuple, batching: tuple[int, float]) -> LoadedVersion:
        version_id, number, fmt, sha256, signature, model, _team, onnx_sha = record
        signature = validate_signature(signature)
        candidates = ([("onnx", onnx_sha, "onnx export")] if onnx_sha and fmt != "onnx" else []) \
            + [(fmt, sha256, f"{fmt} file")]
        last_error: Exception | None = None
        for file_fmt, sha, what in candidates:
            key = (version_id, file_fmt, sha)
            try:
                predictor = self._predictors.get(key)
                if predictor is None:
                    predictor = runtime.load(file_fmt, self.blobs.get_bytes(sha), threads=1, threads_for_torch=True)
                    self._predictors[key] = predictor
            except Exception as exc:  # noqa: BLE001 - try the next file, report the last failure
                logger.warning("model %s:%s %s did not load: %s", model, number, what, exc)
                last_error = exc
                continue
            batcher = self._batchers.get(key + batching)
            if batcher is None:
                batcher = Batcher(predictor, max_batch_size=batching[0], max_wait_ms=batching[1],
                                  name=f"{model}:{number}", busy=IN_FLIGHT.value)
                self._batchers[key + batching] = batcher
            return LoadedVersion(version_id=version_id, model=model, version=number, signature=signature,
                                 runtime=predictor.runtime, file_format=what, batcher=batcher)
        raise Invalid(f"model {model}:{number} could not be loaded: {last_error}", spec="routes")

    def _retire(self, table: dict[str, Deployment]) -> None:
        """Close batchers and forget predictors that no deployment in ``table`` uses."""
        used = {id(v.batcher) for d in table.values() for v in (*d.routes, *([d.shadow] if d.shadow else []))}
        for key, batcher in list(self._batchers.items()):
            if id(batcher) not in used:
                del self._batchers[key]
                batcher.close()  # drains what it holds; late submits run in the caller's thread
        live = {key[:3] for key in self._batchers}
        for key in list(self._predictors):
            if key not in live:
                del self._predictors[key]


__all__ = ["CHANNEL", "Deployment", "LoadedVersion", "Router", "parse_spec"]
