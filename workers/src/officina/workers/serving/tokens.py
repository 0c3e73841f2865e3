"""Bearer-token authentication with a short cache, so the request path seldom touches the database."""
from __future__ import annotations

import threading
import time

from officina.platform.auth.entities import Principal
from officina.platform.auth.service import AuthService, hash_token
from officina.platform.errors import Unauthenticated


class TokenCache:
    """Principals of recently seen tokens, keyed by the token's SHA-256, for ``ttl_s`` seconds.

    A revoked token or a changed membership takes effect within ``ttl_s``.
    """

    def __init__(self, auth: AuthService, *, ttl_s: float = 30.0, max_entries: int = 10_000):
        self.auth, self.ttl_s, self.max_entries = auth, ttl_s, max_entries
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def principal(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization: Bearer <token>`` header.

        Raises:
            Unauthenticated: no bearer token, or one that is unknown, revoked or expired.
        """
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("send an API token: Authorization: Bearer <token>")
        token = authorization[7:].strip()
        key = hash_token(token)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = self.auth.authenticate_token(token)
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[key] = (principal, now + self.ttl_s)
        return principal
