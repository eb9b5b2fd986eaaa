"""A small HTTP client of the scoring API (``POST /v1/score``), used by ``stream-ctr simulate``, the benchmark and
the tests. One keep-alive connection per client; not thread-safe (one client per thread). A worker past its
capacity sheds a request with 429 (or 503) and ``Retry-After``: :meth:`ScoringClient.score` waits that long (at
most ``max_wait_s``) and asks again, ``retries`` times, as a well-behaved client of a shedding service does."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import orjson

__all__ = ["ScoringClient", "ScoringError", "erase_user"]


class ScoringError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class ScoringClient:
    def __init__(self, url: str, timeout: float = 10.0, retries: int = 5, max_wait_s: float = 1.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.retries, self.max_wait_s = retries, max_wait_s
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, path: str = "/v1/score") -> tuple[int, bytes]:
        """Send raw ``body``; returns ``(status, response body)``. Reconnects once if the connection dropped."""
        status, answer, _ = self._send(body, path)
        return status, answer

    def _send(self, body: bytes, path: str) -> tuple[int, bytes, str | None]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                return resp.status, resp.read(), resp.getheader("Retry-After")
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def score(self, request: dict) -> dict:
        """The ranked response for ``request``; :class:`ScoringError` for any other non-200 answer, or when the
        worker still sheds it after ``retries`` waits."""
        body = orjson.dumps(request)
        for attempt in range(self.retries + 1):
            status, answer, retry_after = self._send(body, "/v1/score")
            if status in (429, 503) and retry_after is not None and attempt < self.retries:
                time.sleep(min(_seconds(retry_after), self.max_wait_s))
                continue
            break
        data = orjson.loads(answer) if answer else {}
        if status != 200:
            raise ScoringError(status, data.get("error", answer[:200].decode(errors="replace")))
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def erase_user(url: str, user_id: str, api_key: str | None = None, timeout: float = 30.0) -> dict:
    """``DELETE /v1/users/{user_id}`` on the worker at ``url`` (any worker: it is routed to the owner), with an
    ``admin`` key when the API has keys: what the owner erased. :class:`ScoringError` for any non-200 answer."""
    import urllib.error
    import urllib.parse
    import urllib.request

    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/users/{urllib.parse.quote(user_id, safe='')}",
        method="DELETE",
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        message = orjson.loads(body).get("error", "") if body.startswith(b"{") else body[:200].decode(errors="replace")
        raise ScoringError(err.code, message) from None


def _seconds(retry_after: str) -> float:
    try:
        return max(0.0, float(retry_after))
    except ValueError:  # an HTTP date: not what this service sends
        return 1.0
