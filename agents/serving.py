"""``POST /v1/score`` on a worker: admit, validate, route to the user's owner, rank in micro-batches, log the
exposure.

A user's head lives on the worker that owns the user's partition of ``ctr.events``. Any worker may receive a
request: it asks Faust's router which worker owns the user's key (the assignment every worker of the group
shares) and forwards the body there unless that is itself; a forwarded request is always served where it lands,
so a request is forwarded at most once. The owner ranks the candidates with the snapshot in use and the user's
head of the user's arm (:func:`stream_ctr.serving.scoring.rank_many`), writes the exposure to ``ctr.exposures`` and
remembers it for attribution (:class:`~stream_ctr.experiments.attribution.PendingExposures`).

Under load (docs/ARCHITECTURE.md, "Serving under load"):

- **Admission.** At most ``serving_max_in_flight`` requests are held at once, and none is taken while the event
  loop stays more than ``serving_max_lag_ms`` late (two probes in a row, 5 ms apart: requests not yet looked at
  wait that long; one late probe is a learning batch that held the loop once, not overload); past either, a
  request is answered 429 with ``Retry-After`` before its body is read, so overload costs a refusal, not a
  queue every client waits in.
- **Micro-batching.** Requests held together are ranked together: one encoding and one forward pass over all
  their candidates (up to ``serving_max_batch`` requests). A request alone is ranked at once; while others are
  being read, the batch waits up to ``LINGER_S`` (1 ms) for them to join.
- **Deadline.** A request carries ``X-Deadline-Ms`` (default ``serving_deadline_ms``); one still waiting for its
  batch after it is dropped with 503 instead of being computed for a client that has given up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson

from stream_ctr.experiments.attribution import Served
from stream_ctr.serving.scoring import (
    DEADLINE_HEADER,
    MAX_BODY_BYTES,
    BadRequest,
    Query,
    exposure_record,
    head_for,
    parse_deadline,
    parse_score_request,
    rank_many,
)

if TYPE_CHECKING:
    from .personalize import PersonalizeWorker

log = logging.getLogger(__name__)

__all__ = ["FORWARDED", "ScoringView"]

#: Header marking a request another worker forwarded to its owner.
FORWARDED = "X-Stream-Ctr-Forwarded"
_JSON = "application/json"
PROBE_EVERY_S = 0.005
#: How long a batch waits for requests still being read to join it (only when there are such requests).
LINGER_S = 0.001


class Shed(Exception):
    """A request dropped unserved: ``status`` and the message the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ScoringView:
    def __init__(self, worker: PersonalizeWorker):
        self.worker = worker
        s = worker.settings
        self.max_in_flight, self.max_batch = s.serving_max_in_flight, s.serving_max_batch
        self.default_deadline_s = s.serving_deadline_ms / 1000.0
        self.metrics = worker.metrics.serving
        self.in_flight = 0
        self._queue: list[tuple[Query, float, float, asyncio.Future]] = []  # query, arrival, deadline, answer
        self._timer: asyncio.Handle | None = None  # the flush to come, when one is scheduled
        self.max_lag_s = s.serving_max_lag_ms / 1000.0
        self.lag = 0.0  # how late the event loop ran its last probe: how long a request waits to be looked at
        self.overloaded = False  # the last two probes both ran past max_lag_s late
        self._probe_due: float | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, web, request):
        if self._probe_loop is not asyncio.get_running_loop():
            self._probe_loop, self._probe_due = asyncio.get_running_loop(), None
            self._probe()
        if self.in_flight >= self.max_in_flight or self.overloaded:
            self.metrics.shed.labels("over_capacity").inc()
            return web.json(
                {
                    "error": f"over capacity ({self.in_flight} scoring requests held, the event loop "
                    f"{self.lag * 1e3:.0f} ms behind); retry later"
                },
                status=429,
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            return await self._handle(web, request)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    async def _handle(self, web, request):
        try:
            deadline_s = parse_deadline(request.headers.get(DEADLINE_HEADER), self.default_deadline_s)
            body = await _read_body(request)
            query = parse_score_request(body)
        except BadRequest as err:
            return web.json({"error": err.message}, status=err.status)
        owner = self._owner(query.user_id)
        if owner is not None and not request.headers.get(FORWARDED):
            return await self._forward(web, owner, body)
        if self.worker.follower.holder.current is None:
            return web.json({"error": "no model snapshot on ctr.model yet"}, status=503)
        try:
            return web.bytes(await self.score(query, deadline_s), content_type=_JSON)
        except Shed as shed:
            return web.json({"error": shed.message}, status=shed.status, headers={"Retry-After": "1"})

    def _probe(self) -> None:
        """Every 5 ms: how late this callback runs is how long anything ready waits for the loop now."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        lag = 0.0 if self._probe_due is None else max(0.0, now - self._probe_due)
        # Sustained, not one late probe: a learning batch that held the loop once is over when this runs.
        self.overloaded = lag > self.max_lag_s and self.lag > self.max_lag_s
        self.lag = lag
        self.metrics.loop_lag.set(lag)
        self._probe_due = now + PROBE_EVERY_S
        loop.call_at(self._probe_due, self._probe)

    def score(self, query: Query, deadline_s: float | None = None) -> asyncio.Future:
        """Queue ``query`` for the next batch; the future is the response body (or raises :class:`Shed`)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        answer = loop.create_future()
        self._queue.append((query, now, now + (deadline_s or self.default_deadline_s), answer))
        if len(self._queue) >= self.max_batch:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_soon(self._flush)
        elif self._timer is None:
            # Alone: now. Others are held (their bodies are being read): wait a moment for them to join.
            self._timer = loop.call_later(LINGER_S if self.in_flight > len(self._queue) else 0, self._flush)
        return answer

    def _flush(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        self._timer = asyncio.get_running_loop().call_soon(self._flush) if self._queue else None
        now = time.monotonic()
        live = []
        for item in batch:
            query, arrived, deadline, answer = item
            self.metrics.queue_seconds.observe(now - arrived)
            if answer.done():  # the client went away
                continue
            if now > deadline:
                self.metrics.shed.labels("deadline").inc()
                answer.set_exception(
                    Shed(503, f"deadline passed after {(now - arrived) * 1e3:.0f} ms queued; retry later")
                )
            else:
                live.append(item)
        if not live:
            return
        try:
            bodies = self._rank([q for q, *_ in live])
        except Exception as exc:  # never leave a client waiting: every request of the batch gets the error
            for *_, answer in live:
                answer.set_exception(exc)
            return
        for (*_, answer), body in zip(live, bodies):
            answer.set_result(body)

    def _rank(self, queries: list[Query]) -> list[bytes]:
        """Rank a batch with the snapshot in use, log each exposure and remember it for attribution."""
        w = self.worker
        model = w.follower.holder.current
        unknown = model.encoder.unknown_features
        assignments = [w.experiment.assign(q.user_id) for q in queries]
        heads = [head_for(w.users.get(q.user_id), a, model) for q, a in zip(queries, assignments)]
        rankings = rank_many(queries, model, heads, assignments, w.experiment)
        self.metrics.batch_requests.observe(len(queries))
        w.staleness.request(model.snapshot.offsets, model.snapshot.trained_ts, len(queries))
        w.metrics.unknown_features.inc(model.encoder.unknown_features - unknown)
        ts = time.time()
        for q, ranking in zip(queries, rankings):
            w.pending.add(
                q.request_id,
                Served(ranking.arm, ranking.in_experiment, ts, dict(zip(ranking.item_ids, ranking.scores))),
            )
            if ranking.in_experiment:
                w.results.requested(ranking.arm)
            w.exposures.send_soon(key=q.user_id.encode(), value=orjson.dumps(exposure_record(q, ranking, ts)))
        return [r.to_json() for r in rankings]

    def _owner(self, user_id: str):
        """The URL of the worker owning ``user_id``, or None when it is this one (or the assignment is unknown)."""
        app = self.worker.app
        try:
            url = app.router.key_store(self.worker.table.name, user_id)
        except KeyError:  # no assignment yet (starting): serve here rather than fail
            return None
        me = app.conf.canonical_url
        return None if (url.host, url.port) == (me.host, me.port) else url

    async def _forward(self, web, owner, body: bytes):
        url = owner.with_path("/v1/score")
        headers = {FORWARDED: "1", "Content-Type": _JSON}
        try:
            async with self.worker.app.http_client.post(url, data=body, headers=headers) as resp:
                return web.bytes(await resp.read(), content_type=resp.content_type, status=resp.status)
        except (OSError, aiohttp.ClientError) as exc:
            log.warning("forwarding a score request to %s failed: %s", url, exc)
            return web.json({"error": f"the worker owning this user ({owner}) is unreachable"}, status=503)


async def _read_body(request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadRequest(413, f"body is {length} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        return await request.read()
    except Exception as exc:  # aiohttp refuses bodies over its own limit while streaming them
        raise BadRequest(413, f"body could not be read: {exc}") from None
