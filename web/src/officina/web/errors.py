"""One map from errors to HTTP: ``{"error": {"code", "message", "details"}}`` under /api.

Platform errors carry their status; HTTP errors keep theirs; anything else is a 500 with a
request id, its traceback in the log only.
"""
from __future__ import annotations

import json
import logging
import uuid

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from officina.platform.errors import OfficinaError, Unauthenticated

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               429: "too_many_requests"}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/livez")


def error_response(status: int, code: str, message: str, details: dict | None = None):
    if wants_json():
        body = {"error": {"code": code, "message": message, "details": details or {}}}
        if status >= 500:
            body["error"]["request_id"] = g.get("request_id")
        response = jsonify(body)
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="officina"'
        return response
    return render_template("error.html", status=status, code=code, message=message), status


def _plain(value):
    """A detail as JSON: plain JSON structures as they are (e.g. the gates of a blocked promotion), else text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            pass
    return str(value)


def init_app(app: Flask) -> None:
    """Register the error handlers and a request id on every request."""

    @app.before_request
    def _request_id():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex

    @app.after_request
    def _headers(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.errorhandler(OfficinaError)
    def _officina(exc: OfficinaError):
        if isinstance(exc, Unauthenticated) and not wants_json():
            from flask import redirect, url_for

            return redirect(url_for("console.login", next=request.full_path))
        return error_response(exc.status, exc.code, exc.message, {k: _plain(v) for k, v in exc.details.items()})

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        return error_response(400, "csrf", f"CSRF check failed: {exc.description}")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error request_id=%s path=%s", g.get("request_id"), request.path)
        return error_response(500, "internal", "internal error; the administrator can find it in the "
                              f"logs by request id {g.get('request_id')}")
