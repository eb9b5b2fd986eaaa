"""API keys with scopes for the HTTP API, stored hashed, checked in constant time, rate-limited per key.

The file named by ``STREAM_CTR_API_KEYS_FILE`` holds one key per line, ``<sha256 hex of the key> <scope>[,<scope>]``
(``#`` starts a comment). Scopes: ``score`` (``POST /v1/score``), ``read_users`` (``GET /v1/users/{id}``) and
``admin`` (experiments, stats). A request names its key as ``Authorization: Bearer <key>``. The key itself is
never stored: a leaked file does not leak a key.

>>> import hashlib
>>> keys = ApiKeys.parse(hashlib.sha256(b"k1").hexdigest() + " score\\n")
>>> keys.check("Bearer k1", "score") is None, keys.check("Bearer k1", "admin").status, keys.check(None, "score").status
(True, 403, 401)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SCOPES", "ApiKeys", "Denied"]

SCOPES = ("score", "read_users", "admin")


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: ``status`` (401, 403 or 429), a message, and headers to send."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Bucket:
    tokens: float
    at: float


class ApiKeys:
    """The keys of one file: their hashes and scopes, and a token bucket per key (``rate`` requests/s, 0: none)."""

    def __init__(self, scopes: dict[str, frozenset[str]], rate: float = 0.0):
        self.scopes, self.rate = scopes, rate
        self._buckets = {digest: _Bucket(max(rate, 1.0), time.monotonic()) for digest in scopes}

    @classmethod
    def parse(cls, text: str, rate: float = 0.0, where: str = "api keys") -> ApiKeys:
        """Keys from the file's text; a malformed line raises ValueError naming ``where`` and the line."""
        scopes: dict[str, frozenset[str]] = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            named = frozenset(parts[1].split(",")) if len(parts) == 2 else frozenset()
            if len(parts) != 2 or len(parts[0]) != 64 or not _is_hex(parts[0]) or not named <= set(SCOPES):
                raise ValueError(
                    f"{where}:{n}: expected '<sha256 hex of the key> <scope>[,<scope>...]' with scopes from "
                    f"{', '.join(SCOPES)}"
                )
            scopes[parts[0].lower()] = named
        return cls(scopes, rate)

    @classmethod
    def load(cls, path: str, rate: float = 0.0) -> ApiKeys:
        return cls.parse(Path(path).read_text(), rate, where=path)

    def check(self, authorization: str | None, scope: str, count: bool = True) -> Denied | None:
        """None when ``authorization`` (the header) names a key with ``scope`` and within its rate; ``count``
        False does not spend a token (a request another worker already admitted and forwarded here)."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return Denied(401, "an API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        found = None
        for stored in self.scopes:  # every stored hash is compared, in constant time: no timing tells which
            if hmac.compare_digest(stored, digest):
                found = stored
        if found is None:
            return Denied(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
        if scope not in self.scopes[found]:
            return Denied(403, f"this API key lacks the '{scope}' scope")
        if count and self.rate > 0 and not self._take(found):
            return Denied(429, f"this API key is over its {self.rate:g} requests/s", {"Retry-After": "1"})
        return None

    def _take(self, digest: str) -> bool:
        bucket, now = self._buckets[digest], time.monotonic()
        bucket.tokens = min(max(self.rate, 1.0), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
