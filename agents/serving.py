"""``POST /v1/score`` on a worker: admit, validate, route to the user's owner, rank in micro-batches, log the
exposure.

A user's head lives on the worker that owns the user's partition of ``ctr.events``. Any worker may receive a
request: it asks Faust's router which worker owns the user's key (the assignment every worker of the group
shares) and forwards the body there unless that is itself; a forwarded request is always served where it lands,
so a request is forwarded at most once. The owner ranks the candidates with the snapshot in use and the user's
head of the user's arm (:func:`stream_ctr.serving.scoring.rank_many`), writes the exposure to ``ctr.exposures`` and
remembers it for attribution (:class:`~stream_ctr.experiments.attribution.PendingExposures`). Three units, each
given what it uses: :class:`ScoringView` (admission, deadlines, micro-batches), :class:`Routing` (the owner of a
user, forwarding) and :class:`Ranker` (ranking a batch, logging its exposures).

Under load (docs/ARCHITECTURE.md, "Serving under load"):

- **Admission.** At most ``serving_max_in_flight`` requests are held at once, and no more are taken while the
  event loop stays more than ``serving_max_lag_ms`` late with requests held (two probes in a row, 5 ms apart:
  requests not yet looked at wait that long; one late probe is a learning batch that held the loop once, not
  overload; with none held, the lateness is learning's and a refusal would free nothing); past either, a request
  is answered 429 with ``Retry-After`` before its body is read, so overload costs a refusal, not a queue every
  client waits in.
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
from aiokafka.errors import KafkaError

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

from .snapshots import assigned_consumer

if TYPE_CHECKING:
    from collections.abc import Mapping

    import faust
    from yarl import URL

    from stream_ctr.config import Settings
    from stream_ctr.experiments.assignment import Experiment
    from stream_ctr.experiments.attribution import ArmResults, PendingExposures
    from stream_ctr.learning.state import UserState
    from stream_ctr.models.snapshot import ModelSource
    from stream_ctr.monitoring.freshness import Staleness
    from stream_ctr.monitoring.prometheus import ScorerMetrics, ServingMetrics, WorkerMetrics

log = logging.getLogger(__name__)

__all__ = ["FORWARDED", "SERVED_BY", "STREAM_POLL_S", "Ranker", "Routing", "ScoringView", "follow_stream_ends"]

#: Header marking a request another worker forwarded to its owner.
FORWARDED = "X-Stream-Ctr-Forwarded"
#: Kafka header of an exposure a scorer process served: its name (the user's worker attributes it).
SERVED_BY = "served-by"
_JSON = "application/json"
PROBE_EVERY_S = 0.005
#: How long a batch waits for requests still being read to join it (only when there are such requests).
LINGER_S = 0.001
#: Seconds between two reads of ``ctr.events``' end offsets, where a request is answered: its staleness misses at
#: most the events written in that time (300 at 3,000 events/s).
STREAM_POLL_S = 0.1


class Shed(Exception):
    """A request dropped unserved: ``status`` and the message the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Ranker:
    """Ranks a batch of queries with the model in use (``models``: the worker's catch-up) and each user's head
    (``users``) of the user's arm, logs each exposure to ``exposures`` and remembers it for attribution
    (``pending``, ``results``). A scorer process has no ``pending`` (it attributes nothing): its exposures carry
    the header :data:`SERVED_BY` naming it, and the user's worker attributes them from ``ctr.exposures``."""

    def __init__(
        self,
        models: ModelSource,
        users: Mapping[str, UserState],
        experiment: Experiment,
        *,
        pending: PendingExposures | None,
        results: ArmResults | None,
        exposures: faust.TopicT,
        staleness: Staleness,
        metrics: WorkerMetrics | ScorerMetrics,
        served_by: str | None = None,
    ):
        self.models, self.users, self.experiment = models, users, experiment
        self.pending, self.results, self.exposures = pending, results, exposures
        self.staleness, self.metrics = staleness, metrics
        self._headers = None if served_by is None else [(SERVED_BY, served_by.encode())]

    @property
    def ready(self) -> bool:
        """Whether there is a model to rank with (the first snapshot arrived)."""
        return self.models.current is not None

    def rank(self, queries: list[Query]) -> list[bytes]:
        """The response bodies of ``queries``, ranked together."""
        model = self.models.current
        assert model is not None, "requests are admitted only once ready()"
        unknown = model.encoder.unknown_features
        experiment = self.experiment  # one definition for the whole batch: the one its exposures log
        assignments = [experiment.assign(q.user_id) for q in queries]
        heads = [head_for(self.users.get(q.user_id), a, model) for q, a in zip(queries, assignments)]
        rankings = rank_many(queries, model, heads, assignments, experiment)
        self.metrics.serving.batch_requests.observe(len(queries))
        self.staleness.request(model.snapshot.offsets, model.snapshot.trained_ts, len(queries))
        self.metrics.unknown_features.inc(model.encoder.unknown_features - unknown)
        ts, epoch = time.time(), experiment.epoch
        for q, ranking in zip(queries, rankings):
            if self.pending is not None:
                items = dict(zip(ranking.item_ids, ranking.scores))
                self.pending.add(q.request_id, Served(ranking.arm, ranking.in_experiment, ts, items, q.user_id, epoch))
            if ranking.in_experiment and self.results is not None:
                self.results.requested(ranking.arm)
            record = exposure_record(q, ranking, experiment.propensity(ranking.arm), ts, epoch)
            self.exposures.send_soon(key=q.user_id.encode(), value=orjson.dumps(record), headers=self._headers)
        return [r.to_json() for r in rankings]


class Routing:
    """Which worker owns a user (Faust's router over the assignment of ``app``'s table ``table_name``, which every
    worker of the group shares), and forwarding a request there."""

    def __init__(self, app: faust.App, table_name: str):
        self.app, self.table_name = app, table_name

    def owner(self, user_id: str) -> URL | None:
        """The URL of the worker owning ``user_id``, or None when it is this one (or the assignment is unknown)."""
        try:
            url = self.app.router.key_store(self.table_name, user_id)
        except KeyError:  # no assignment yet (starting): serve here rather than fail
            return None
        me = self.app.conf.canonical_url
        return None if (url.host, url.port) == (me.host, me.port) else url

    async def forward(self, web, owner: URL, body: bytes, authorization: str | None = None):
        """The owner's answer to ``body``, marked as forwarded (so it is served there, never forwarded again), with
        the caller's ``authorization`` (the owner checks the key too)."""
        url = owner.with_path("/v1/score")
        headers = {FORWARDED: "1", "Content-Type": _JSON}
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self.app.http_client.post(url, data=body, headers=headers) as resp:
                return web.bytes(await resp.read(), content_type=resp.content_type, status=resp.status)
        except (OSError, aiohttp.ClientError) as exc:
            log.warning("forwarding a score request to %s failed: %s", url, exc)
            return web.json({"error": f"the worker owning this user ({owner}) is unreachable"}, status=503)


class ScoringView:
    """The view's admission, deadlines and micro-batches (limits from ``settings``); ``ranker`` ranks a batch,
    ``routing`` finds and reaches the owner of a user who is not this worker's (None: a scorer process, which
    serves every user itself)."""

    def __init__(self, settings: Settings, metrics: ServingMetrics, ranker: Ranker, routing: Routing | None):
        self.ranker, self.routing, self.metrics = ranker, routing, metrics
        self.max_in_flight, self.max_batch = settings.serving_max_in_flight, settings.serving_max_batch
        self.default_deadline_s = settings.serving_deadline_ms / 1000.0
        self.in_flight = 0
        self._queue: list[tuple[Query, float, float, asyncio.Future]] = []  # query, arrival, deadline, answer
        self._timer: asyncio.Handle | None = None  # the flush to come, when one is scheduled
        self.max_lag_s = settings.serving_max_lag_ms / 1000.0
        self.lag = 0.0  # how late the event loop ran its last probe: how long a request waits to be looked at
        self.overloaded = False  # the last two probes both ran past max_lag_s late
        self._probe_due: float | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, web, request):
        if self._probe_loop is not asyncio.get_running_loop():
            self._probe_loop, self._probe_due = asyncio.get_running_loop(), None
            self._probe()
        # A late loop refuses only while requests are held: with none, refusing frees nothing (learning, not
        # serving, made it late) and the request would only be retried into the same wait.
        if self.in_flight >= self.max_in_flight or (self.overloaded and self.in_flight > 0):
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
        owner = None if self.routing is None else self.routing.owner(query.user_id)
        if owner is not None and not request.headers.get(FORWARDED):
            return await self.routing.forward(web, owner, body, request.headers.get("Authorization"))
        if not self.ranker.ready:
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
            bodies = self.ranker.rank([q for q, *_ in live])
        except Exception as exc:  # never leave a client waiting: every request of the batch gets the error
            for *_, answer in live:
                answer.set_exception(exc)
            return
        for (*_, answer), body in zip(live, bodies):
            answer.set_result(body)


async def _read_body(request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadRequest(413, f"body is {length} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        return await request.read()
    except Exception as exc:  # aiohttp refuses bodies over its own limit while streaming them
        raise BadRequest(413, f"body could not be read: {exc}") from None


async def follow_stream_ends(kafka, topic: str, staleness: Staleness) -> None:
    """Forever: the end offsets of ``topic`` (``ctr.events``) every :data:`STREAM_POLL_S`, into ``staleness``
    (:meth:`~stream_ctr.monitoring.freshness.Staleness.stream_ends`), so that a request's staleness counts the
    events written and not yet read. A failed read (the broker away) is logged and tried again."""
    consumer, tps = await assigned_consumer(kafka, topic)
    try:
        while True:
            try:
                ends = await consumer.end_offsets(tps)
            except KafkaError as exc:  # the last ends stand until the broker answers again
                log.warning("could not read the end offsets of %s: %r", topic, exc)
                await asyncio.sleep(1.0)
                continue
            staleness.stream_ends({tp.partition: end for tp, end in ends.items()})
            await asyncio.sleep(STREAM_POLL_S)
    finally:
        await consumer.stop()
