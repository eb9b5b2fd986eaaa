"""``POST /v1/score`` on a worker: validate, route to the user's owner, rank, log the exposure.

A user's head lives on the worker that owns the user's partition of ``ctr.events``. Any worker may receive a
request: it asks Faust's router which worker owns the user's key (the assignment every worker of the group
shares) and forwards the body there unless that is itself; a forwarded request is always served where it lands,
so a request is forwarded at most once. The owner ranks the candidates with the snapshot in use and the user's
head of the user's arm (:func:`stream_ctr.serving.rank`), writes the exposure to ``ctr.exposures`` and remembers
it for attribution (:class:`~stream_ctr.ab.attribution.PendingExposures`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from stream_ctr.ab.attribution import Served
from stream_ctr.serving import MAX_BODY_BYTES, BadRequest, exposure_record, parse_score_request, rank

if TYPE_CHECKING:
    from .personalize import PersonalizeWorker

log = logging.getLogger(__name__)

__all__ = ["FORWARDED", "ScoringView"]

#: Header marking a request another worker forwarded to its owner.
FORWARDED = "X-Stream-Ctr-Forwarded"
_JSON = "application/json"


class ScoringView:
    def __init__(self, worker: "PersonalizeWorker"):
        self.worker = worker

    async def handle(self, web, request):
        try:
            body = await _read_body(request)
            req = parse_score_request(body)
        except BadRequest as err:
            return web.json({"error": err.message}, status=err.status)
        owner = self._owner(req.user_id)
        if owner is not None and not request.headers.get(FORWARDED):
            return await self._forward(web, owner, body)
        if self.worker.follower.holder.current is None:
            return web.json({"error": "no model snapshot on ctr.model yet"}, status=503)
        response = await self.score(req)
        return web.bytes(response.model_dump_json().encode(), content_type=_JSON)

    async def score(self, req):
        """Rank ``req`` here, log its exposure and remember it for attribution."""
        w = self.worker
        assignment = w.experiment.assign(req.user_id)
        model = w.follower.holder.current
        unknown = model.encoder.unknown_features
        response = rank(req, model, w.users.get(req.user_id), assignment, w.experiment)
        w.staleness.request(model.snapshot.offsets, model.snapshot.trained_ts)
        w.metrics.unknown_features.inc(model.encoder.unknown_features - unknown)
        exposure = exposure_record(req, response)
        w.pending.add(req.request_id, Served(response.arm, response.in_experiment, exposure.ts,
                                             {it.item_id: it.score for it in response.items}))
        if response.in_experiment:
            w.results.requested(response.arm)
        await w.exposures.send(key=req.user_id.encode(), value=exposure.model_dump_json().encode())
        return response

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
