"""A small HTTP client of the scoring API (``POST /v1/score``), used by ``stream-ctr simulate``, the benchmark and
the tests. One keep-alive connection per client; not thread-safe (one client per thread)."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import orjson

__all__ = ["ScoringClient", "ScoringError"]


class ScoringError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class ScoringClient:
    def __init__(self, url: str, timeout: float = 10.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, path: str = "/v1/score") -> tuple[int, bytes]:
        """Send raw ``body``; returns ``(status, response body)``. Reconnects once if the connection dropped."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def score(self, request: dict) -> dict:
        """The ranked response for ``request``; :class:`ScoringError` for any non-200 answer."""
        status, body = self.post(orjson.dumps(request))
        data = orjson.loads(body) if body else {}
        if status != 200:
            raise ScoringError(status, data.get("error", body[:200].decode(errors="replace")))
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
