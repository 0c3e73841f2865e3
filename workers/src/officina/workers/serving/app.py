"""The prediction server's Flask app: predict, describe, health; JSON errors like the web API's.

The request path does no database or model-loading work: the token's principal is cached, the
deployment comes from the router's in-memory table, the rows go to the chosen version's batcher,
and logging (and the shadow copy) is queued for background threads after the answer is ready.
"""
from __future__ import annotations

import atexit
import itertools
import json
import logging
import random
import time
import uuid
from datetime import datetime, timezone
from functools import partial
from http import HTTPStatus

import numpy as np
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from officina.platform.auth.access import authorize
from officina.platform.auth.entities import Action, Principal
from officina.platform.errors import Invalid, NotFound, OfficinaError, TooLarge, Unavailable
from officina.platform.models.signature import json_safe, rows_to_array, to_predictions
from officina.platform.settings import Settings
from officina.platform.storage.blobs import BlobStore
from officina.workers.serving.batcher import IN_FLIGHT
from officina.workers.serving.predlog import LogRecord, PredictionLog
from officina.workers.serving.router import Deployment, LoadedVersion, Router
from officina.workers.serving.tokens import TokenCache

logger = logging.getLogger(__name__)

PREDICT_TIMEOUT_S = 60.0
_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class ModelError(OfficinaError):
    """The model failed on input that matched its signature (a model or signature defect)."""

    code, status = "model_error", 500


def _json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, headers=headers,
                    mimetype="application/json")


def error_body(status: int, code: str, message: str, details: dict | None, request_id: str | None) -> dict:
    """The one error shape: ``{"error": {"code", "message", "details"}}`` (and the request id of a 5xx)."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    if status >= 500:
        body["error"]["request_id"] = request_id
    return body


def error_response(status: int, code: str, message: str, details: dict | None = None) -> Response:
    """An error as a Flask response."""
    body = error_body(status, code, message, details, g.get("request_id"))
    headers = {"WWW-Authenticate": 'Bearer realm="officina"'} if status == 401 else None
    return _json_response(body, status, headers)


_ID_PREFIX = uuid.uuid4().hex[:12]  # per process: ids stay unique across replicas
_ID_COUNTER = itertools.count(1)


def next_request_id() -> str:
    """A request id unique to this process (a counter: uuid4's urandom call costs more than the rest)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


class Server:
    """What the routes share: settings, router, token cache and prediction log."""

    def __init__(self, settings: Settings, router: Router, tokens: TokenCache, predlog: PredictionLog):
        self.settings, self.router, self.tokens, self.predlog = settings, router, tokens, predlog

    def deployment_for(self, principal: Principal, name: str) -> Deployment:
        """The loaded deployment ``name`` if the caller may read its team's resources.

        Raises:
            NotFound: unknown, another team's (not revealed), or not loaded yet (a new deployment
                answers within ``serving_reload_s`` plus its models' load time).
        """
        deployment = self.router.table.get(name)
        if deployment is None:
            raise NotFound(f"deployment {name!r} not found")
        try:
            authorize(principal, deployment.team, Action.READ)
        except NotFound:
            raise NotFound(f"deployment {name!r} not found") from None
        return deployment

    def predict(self, name: str) -> Response:
        """The Flask route (the WSGI fast path in front of Flask answers most predictions first)."""
        payload, headers = self.handle(name, request.headers.get("Authorization"), request.get_data(cache=False),
                                       g.request_id)
        return _json_response(payload, headers=headers)

    def handle(self, name: str, authorization: str | None, body: bytes, request_id: str) -> tuple[dict, dict]:
        """One prediction request: ``(response body, headers)``; errors are raised as ``OfficinaError``."""
        with IN_FLIGHT:  # batchers wait for more rows only while other requests are in progress
            return self._predict(name, authorization, body, request_id)

    def _predict(self, name: str, authorization: str | None, body: bytes, request_id: str) -> tuple[dict, dict]:
        started = time.perf_counter()
        principal = self.tokens.principal(authorization)
        deployment = self.deployment_for(principal, name)
        rows = self._rows(body)
        version = deployment.choose()
        batch = rows_to_array(version.signature, rows)
        try:
            outputs = version.batcher.predict(batch, timeout=PREDICT_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"model {version.label} did not answer within {PREDICT_TIMEOUT_S:.0f} s") from None
        except Exception as exc:  # noqa: BLE001 - the runtime's own exception types
            logger.warning("predict failed deployment=%s model=%s: %s", name, version.label, exc)
            raise ModelError(f"model {version.label} failed on this input: {str(exc).splitlines()[0][:300]}")
        predictions = to_predictions(version.signature, outputs)
        raw = outputs.tolist()
        if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
            raw = json_safe(raw)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if deployment.log_sample >= 1.0 or random.random() < deployment.log_sample:
            self._log(deployment, version, rows, batch, predictions, outputs, latency_ms, request_id)
        payload = {"predictions": predictions, "outputs": raw,
                   "model": {"name": version.model, "version": version.version},
                   "deployment": deployment.name, "request_id": request_id}
        return payload, {"X-Model-Version": version.label, "X-Request-Id": request_id}

    def _rows(self, data: bytes) -> list:
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"request body must be JSON like {{\"rows\": [[...], ...]}}: {exc}", body="json") from None
        if not isinstance(body, dict) or "rows" not in body:
            raise Invalid('request body must be an object with "rows": a list of rows', field="rows")
        unknown = sorted(set(body) - {"rows"})
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r} in the request body; expected only \"rows\"",
                          field=unknown[0])
        rows = body["rows"]
        limit = self.settings.serving_max_rows
        if isinstance(rows, list) and len(rows) > limit:
            raise TooLarge(f"{len(rows)} rows is over the limit of {limit} rows per request; split the batch",
                           rows=len(rows), limit=limit)
        return rows

    def _log(self, deployment: Deployment, version: LoadedVersion, rows: list, batch: np.ndarray,
             predictions: list, outputs: np.ndarray, latency_ms: float, request_id: str) -> None:
        """Queue the log record and, where the deployment has one, the shadow's copy: neither blocks."""
        now = datetime.now(timezone.utc)
        self.predlog.offer(LogRecord(deployment.id, version.version_id, False, request_id, now, latency_ms,
                                     rows, {"predictions": predictions, "outputs": outputs}))
        shadow = deployment.shadow
        if shadow is None:
            return
        if shadow.signature["inputs"] != version.signature["inputs"]:
            try:
                batch = rows_to_array(shadow.signature, rows)
            except Invalid as exc:
                logger.info("shadow %s cannot take request %s: %s", shadow.label, request_id, exc.message)
                return
        future = shadow.batcher.submit(batch)
        future.add_done_callback(partial(self._log_shadow, deployment, shadow, rows, request_id,
                                         time.perf_counter()))

    def _log_shadow(self, deployment: Deployment, shadow: LoadedVersion, rows: list, request_id: str,
                    started: float, future) -> None:
        try:
            outputs = future.result()
            record = {"predictions": to_predictions(shadow.signature, outputs), "outputs": outputs}
        except Exception as exc:  # noqa: BLE001 - a failing shadow is logged, never surfaced
            record = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        self.predlog.offer(LogRecord(deployment.id, shadow.version_id, True, request_id,
                                     datetime.now(timezone.utc), (time.perf_counter() - started) * 1000.0,
                                     rows, record))

    def describe(self, name: str) -> Response:
        principal = self.tokens.principal(request.headers.get("Authorization"))
        return _json_response({"deployment": self.deployment_for(principal, name).describe()})

    def health(self) -> Response:
        table = self.router.table
        body = {"status": "ok" if not self.router.errors else "degraded",
                "deployments": {name: {"revision": d.revision,
                                       "routes": [{"model": v.label, "weight": w, "runtime": v.runtime}
                                                  for v, w in zip(d.routes, d.weights)],
                                       "shadow": d.shadow.label if d.shadow else None}
                                for name, d in table.items()},
                "loading": sorted(self.router.loading), "errors": dict(self.router.errors),
                "prediction_log": {"written": self.predlog.written, "dropped": self.predlog.dropped,
                                   "pending": self.predlog.pending()}}
        return _json_response(body)


class FastPredict:
    """WSGI in front of the Flask app: ``POST /v1/deployments/<name>/predict`` is answered without Flask's
    request machinery (the same ``Server.handle``, the same error shape); everything else goes to Flask."""

    PREFIX, SUFFIX = "/v1/deployments/", "/predict"

    def __init__(self, app: Flask, server: Server, max_body: int):
        self.app, self.server, self.max_body = app, server, max_body

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        name = path[len(self.PREFIX):-len(self.SUFFIX)] if path.startswith(self.PREFIX) and \
            path.endswith(self.SUFFIX) else ""
        if environ.get("REQUEST_METHOD") != "POST" or not name or "/" in name:
            return self.app(environ, start_response)
        request_id = environ.get("HTTP_X_REQUEST_ID", "")[:64] or next_request_id()
        headers: dict = {"X-Request-Id": request_id}
        try:
            payload, extra = self.server.handle(name, environ.get("HTTP_AUTHORIZATION"), self._body(environ),
                                                request_id)
            status = 200
            headers.update(extra)
        except OfficinaError as exc:
            status, payload = exc.status, error_body(exc.status, exc.code, exc.message,
                                                     {k: str(v) for k, v in exc.details.items()}, request_id)
            if status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="officina"'
        except Exception:  # noqa: BLE001 - never a traceback to the client
            logger.exception("unhandled error request_id=%s path=%s", request_id, path)
            status, payload = 500, error_body(500, "internal", "internal error; the administrator can find it in "
                                              f"the logs by request id {request_id}", {}, request_id)
        data = json.dumps(payload, separators=(",", ":")).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers.items()])
        return [data]

    def _body(self, environ: dict) -> bytes:
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) > self.max_body:
            raise TooLarge(f"request body is larger than the limit of {self.max_body} bytes")
        data = environ["wsgi.input"].read(int(length) if length and length.isdigit() else self.max_body + 1)
        if len(data) > self.max_body:
            raise TooLarge(f"request body is larger than the limit of {self.max_body} bytes")
        return data


def create_app(settings: Settings, *, services=None) -> Flask:
    """The prediction server over ``services`` (opened from ``settings`` when not given).

    Loads the current deployments before returning and starts the reload and log threads.
    """
    if services is None:
        from officina.platform.services import Services

        services = Services.open(settings, pool_size=4)
    settings = services.settings
    router = Router(services.pool, BlobStore(services.store), settings.database_url,
                    reload_s=settings.serving_reload_s)
    predlog = PredictionLog(services.pool)
    server = Server(settings, router, TokenCache(services.auth), predlog)
    router.start()
    atexit.register(predlog.close)  # a graceful stop writes what is queued
    atexit.register(router.close)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.extensions["officina_serving"] = server

    @app.before_request
    def _request_id():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or next_request_id()

    app.add_url_rule("/v1/deployments/<name>/predict", "predict", server.predict, methods=["POST"])
    app.add_url_rule("/v1/deployments/<name>", "describe", server.describe, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", server.health, methods=["GET"])
    app.add_url_rule("/livez", "livez", lambda: _json_response({"status": "ok"}), methods=["GET"])

    @app.errorhandler(OfficinaError)
    def _officina(exc: OfficinaError):
        return error_response(exc.status, exc.code, exc.message, {k: str(v) for k, v in exc.details.items()})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than the limit of {settings.max_body} bytes"
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error request_id=%s path=%s", g.get("request_id"), request.path)
        return error_response(500, "internal", "internal error; the administrator can find it in the "
                              f"logs by request id {g.get('request_id')}")

    app.wsgi_app = FastPredict(app.wsgi_app, server, settings.max_body)  # type: ignore[method-assign]
    return app
