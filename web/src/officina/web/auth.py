"""Who is calling: bearer tokens for the API, sessions for the console, one resolver for both."""
from __future__ import annotations

from flask import Flask, current_app, g, request, session

from officina.platform.auth.entities import Principal
from officina.platform.errors import Unauthenticated
from officina.platform.services import Services

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def services() -> Services:
    """The services of this app."""
    return current_app.extensions["officina"]


def _resolve() -> Principal | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return services().auth.authenticate_token(token.strip())
    user_id = session.get("user_id")
    if user_id is None:
        return None
    try:
        principal = services().auth.principal_for_user(int(user_id))
    except Unauthenticated:
        session.clear()
        raise
    if request.path.startswith("/api/") and request.method not in SAFE_METHODS:
        # Cookie-authenticated writes to the API must carry the CSRF token (X-CSRFToken).
        current_app.extensions["csrf"].protect()
    return principal


def current_principal(required: bool = True) -> Principal | None:
    """The caller of this request (cached on ``g``).

    Raises:
        Unauthenticated: no valid credentials and ``required``.
    """
    if "principal" not in g:
        g.principal = _resolve()
    if g.principal is None and required:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>' or log in")
    return g.principal


def login_session(user_id: int) -> None:
    """Start a console session for ``user_id`` (a fresh session, so no fixation)."""
    session.clear()
    session["user_id"] = user_id
    session.permanent = True


def logout_session() -> None:
    session.clear()


def init_auth(app: Flask) -> None:
    """Expose the caller to templates as ``principal``."""

    @app.context_processor
    def _inject():
        try:
            principal = current_principal(required=False)
        except Unauthenticated:
            principal = None
        return {"principal": principal}
