"""The web app factory: JSON API under /api/v1, console pages, one error map."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from flask_wtf.csrf import CSRFProtect

from officina.platform.health import check_all
from officina.platform.services import Services
from officina.platform.settings import Settings, with_secrets
from officina.web import api, console, errors
from officina.web.auth import SAFE_METHODS, init_auth

logger = logging.getLogger(__name__)
csrf = CSRFProtect()


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the web app from ``settings`` (read from the environment when omitted)."""
    settings = with_secrets(settings or Settings())
    app = Flask(__name__)
    app.json.sort_keys = False  # keep meaningful orders (splits as asked, columns as stored)
    app.config.update(
        SECRET_KEY=settings.secret_key.get_secret_value(),
        MAX_CONTENT_LENGTH=settings.max_body,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="officina_session",
        PERMANENT_SESSION_LIFETIME=7 * 24 * 3600,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked below for the console, in auth for cookie API calls
        WTF_CSRF_SSL_STRICT=False,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,
        DEBUG=False,
    )
    app.extensions["officina"] = services or Services.open(settings)
    app.extensions["officina_settings"] = settings
    csrf.init_app(app)

    @app.before_request
    def _console_csrf():
        if request.method not in SAFE_METHODS and not request.path.startswith("/api/"):
            csrf.protect()

    errors.init_app(app)
    init_auth(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(console.bp)

    @app.get("/livez")
    def livez():
        """Liveness: the web process answers (no dependency is checked)."""
        return jsonify(status="alive")

    @app.get("/healthz")
    def healthz():
        """Each component's health; 503 when any is down."""
        svc: Services = app.extensions["officina"]
        components = check_all(svc.pool, svc.store, svc.celery)
        ok = all(c["ok"] for c in components.values())
        return jsonify(status="ok" if ok else "degraded", components=components), 200 if ok else 503

    return app
