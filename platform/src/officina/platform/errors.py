"""Errors whose message is safe to show a user; the web layer maps each to an HTTP status once."""
from __future__ import annotations


class OfficinaError(Exception):
    """Base for errors whose message is safe to show a user."""

    code = "internal"
    status = 500

    def __init__(self, message: str, **details: object):
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(OfficinaError):
    """The request is malformed or a value is out of range (``details`` names the field)."""

    code, status = "invalid", 400


class Unauthenticated(OfficinaError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    code, status = "unauthenticated", 401


class Forbidden(OfficinaError):
    """The caller is known but may not do this."""

    code, status = "forbidden", 403


class NotFound(OfficinaError):
    """No such resource, or one the caller may not see."""

    code, status = "not_found", 404


class Conflict(OfficinaError):
    """The resource already exists or is in a state that forbids the change."""

    code, status = "conflict", 409


class TooLarge(OfficinaError):
    """The request or an uploaded object is over a configured limit."""

    code, status = "too_large", 413


class Unavailable(OfficinaError):
    """A backing service (database, S3, broker) cannot be reached."""

    code, status = "unavailable", 503
