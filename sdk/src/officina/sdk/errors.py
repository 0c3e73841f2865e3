"""Errors the SDK raises: one class per server error code, carrying the server's message."""
from __future__ import annotations


class OfficinaError(Exception):
    """An error answered by the Officina server (or no answer at all)."""

    code = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 details: dict | None = None, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.code
        self.details = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        prefix = f"[{self.status} {self.code}] " if self.status else ""
        return prefix + self.message


class InvalidRequest(OfficinaError):
    code = "invalid"


class Unauthenticated(OfficinaError):
    code = "unauthenticated"


class Forbidden(OfficinaError):
    code = "forbidden"


class NotFound(OfficinaError):
    code = "not_found"


class Conflict(OfficinaError):
    code = "conflict"


class TooLarge(OfficinaError):
    code = "too_large"


class ServerError(OfficinaError):
    code = "internal"


class ConnectionFailed(OfficinaError):
    """The server could not be reached."""

    code = "connection_failed"


_BY_CODE = {cls.code: cls for cls in (InvalidRequest, Unauthenticated, Forbidden, NotFound, Conflict, TooLarge)}
_BY_STATUS = {400: InvalidRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge}


def error_for(status: int, body: object) -> OfficinaError:
    """Rebuild the server's error from an HTTP status and its JSON body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return (_BY_STATUS.get(status) or ServerError)(f"HTTP {status}", status=status)
    code = error.get("code") or ""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else OfficinaError)
    return cls(error.get("message") or f"HTTP {status}", status=status, code=code or None,
               details=error.get("details"), request_id=error.get("request_id"))
