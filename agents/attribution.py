"""A worker's share of the exposures scorer processes served: read from ``ctr.exposures`` into its pending ones.

A worker attributes a user's events to the rankings the user was served (``PendingExposures``, filled by its own
ranker as it serves). A scorer process (:mod:`.scorer`) serves without learning and remembers nothing; it writes
each exposure to ``ctr.exposures`` with the header :data:`~agents.serving.SERVED_BY`, keyed by user id like
``ctr.events``, so a user's exposures and events share a partition number. :meth:`ScorerExposures.run` (a task of
the worker) follows every partition of ``ctr.exposures`` from its end at start and keeps the scorer-served ones
of the partitions this worker owns: each becomes a pending exposure and a request of its arm, exactly as if the
worker had served it, in the bandit epoch the record names (a record from before records named one: the
worker's current epoch).

A client can answer a ranking before its exposure reaches the worker: such an event waits a few seconds for it
(:class:`~stream_ctr.experiments.attribution.WaitingEvents`) and is attributed when it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from stream_ctr.experiments.attribution import ArmResults, PendingExposures, Served

from .serving import SERVED_BY
from .snapshots import assigned_consumer

log = logging.getLogger(__name__)

__all__ = ["ScorerExposures"]


class ScorerExposures:
    """Scorer-served exposures of the partitions in ``owned`` (the worker's, set at each rebalance), into
    ``pending`` and ``results``; each request id taken is passed to ``arrived`` (the events already waiting for it
    are attributed there)."""

    def __init__(
        self,
        kafka,
        topic: str,
        pending: PendingExposures,
        results: ArmResults,
        arrived: Callable[[str], None] = lambda request_id: None,
    ):
        self.kafka, self.topic, self.pending, self.results, self.arrived = kafka, topic, pending, results, arrived
        self.owned: set[int] = set()  # partitions of ctr.events (and so of ctr.exposures) the worker owns
        self.taken = 0  # scorer-served exposures taken into pending so far
        self.unreadable = 0

    def take(self, partition: int, headers, value: bytes) -> bool:
        """One ``ctr.exposures`` record; returns whether it was a scorer's exposure of an owned partition, taken."""
        if partition not in self.owned or not any(name == SERVED_BY for name, _ in headers or ()):
            return False
        try:
            record = orjson.loads(value)
            items = {item["item_id"]: float(item["score"]) for item in record["items"]}
            served = Served(
                record["arm"],
                bool(record["in_experiment"]),
                float(record["ts"]),
                items,
                record["user_id"],
                int(record.get("epoch", self.results.experiment.epoch)),
            )
            request_id = record["request_id"]
        except (ValueError, KeyError, TypeError) as exc:
            self.unreadable += 1
            log.warning("skipping an unreadable exposure on %s partition %d: %s", self.topic, partition, exc)
            return False
        self.pending.add(request_id, served)
        if served.in_experiment and served.arm in self.results.totals:
            self.results.requested(served.arm)
        self.taken += 1
        self.arrived(request_id)
        return True

    async def run(self) -> None:
        consumer, tps = await assigned_consumer(self.kafka, self.topic)
        try:
            await consumer.seek_to_end(*tps)  # what was served before this worker started is not pending here
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                for records in batches.values():
                    for msg in records:
                        self.take(msg.partition, msg.headers, msg.value)
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
