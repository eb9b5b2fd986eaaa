"""The worker's side of the experiment registry: follow ``ctr.experiments`` and enforce the guardrails.

:meth:`ExperimentFollower.follow` reads the records of ``ctr.experiments`` that are new since its last call (every
``STREAM_CTR_EXPERIMENT_POLL_S``; an aiokafka consumer of its own, on the event loop, outside any group) and applies
the newest definition of the running experiment among them when it is the same run with other stops (a stop or a
resume published by another worker or by ``stream-ctr ab stop|resume``) or a later epoch of the same bandit run
(published by the allocator, ``stream-ctr ab bandit``: other weights, the epoch's salt); a definition of another run
under the same name (a new salt), or of an earlier epoch, is left for the next start, which checks it.
:meth:`ExperimentFollower.enforce` runs after every refresh of the per-arm results: each significant guardrail breach
(:meth:`~stream_ctr.experiments.attribution.ArmResults.breaches`) stops its arm through ``ctr.experiments``
(:func:`~stream_ctr.experiments.registry.stop_arm`, audited), applies the new definition here at once and counts
the stop (``stream_ctr_ab_guardrail_stops_total``). The registry's publishing blocks, so it runs off the event
loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiokafka import TopicPartition

from stream_ctr.broker.connection import Kafka
from stream_ctr.experiments import registry
from stream_ctr.experiments.assignment import Experiment, ExperimentError, check_transition, later_epoch
from stream_ctr.experiments.attribution import ArmResults
from stream_ctr.monitoring.prometheus import WorkerMetrics

log = logging.getLogger(__name__)

__all__ = ["ExperimentFollower"]


def same_run(a: Experiment, b: Experiment) -> bool:
    """Whether ``a`` and ``b`` are the same running experiment (name, salt, epoch and bucket ranges)."""
    return (a.name, a.split_salt, a.allocation) == (b.name, b.split_salt, b.allocation)


def next_epoch(current: Experiment, definition: Experiment) -> bool:
    """Whether ``definition`` is a later epoch of the bandit run ``current`` that may follow it."""
    if not later_epoch(current, definition):
        return False
    try:
        check_transition(current, definition)
    except ExperimentError:
        return False
    return True


class ExperimentFollower:
    """Applies the registry's definitions of ``results.experiment`` through ``use``; ``by`` names this worker in
    the stops it publishes. ``metrics`` counts the stops :meth:`enforce` publishes (None: a scorer, which only
    follows)."""

    def __init__(
        self,
        kafka,
        topic: str,
        results: ArmResults,
        metrics: WorkerMetrics | None,
        use: Callable[[Experiment], None],
        by: str,
    ):
        self.kafka, self.topic, self.results, self.metrics, self.use, self.by = kafka, topic, results, metrics, use, by
        self._consumer = None

    async def _off_loop(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    def apply(self, definition: Experiment | None) -> bool:
        """Use ``definition`` if it is the running experiment with other stops, or a later epoch of the running
        bandit; returns whether it was used."""
        current = self.results.experiment
        if definition is None or definition == current:
            return False
        if next_epoch(current, definition):
            log.warning("experiment %r: epoch %d -> %d, weights %s", current.name, current.epoch, definition.epoch,
                        {arm: round(w, 4) for arm, w in definition.weights.items()})  # fmt: skip
            self.use(definition)
            return True
        if not same_run(definition, current):
            log.warning("%s holds another run of %r (salt %r): kept", self.topic, current.name, definition.salt)
            return False
        for arm in set(definition.stopped) - set(current.stopped):
            log.warning("experiment %r: arm %s stopped: %s", current.name, arm, definition.stopped[arm].reason)
        for arm in set(current.stopped) - set(definition.stopped):
            log.warning("experiment %r: arm %s resumed", current.name, arm)
        self.use(definition)
        return True

    async def follow(self) -> None:
        """Read the new records and apply the newest definition among them (a failed read starts again from the
        beginning of the topic at the next tick)."""
        try:
            definition = await self._newest()
        except Exception as exc:  # the broker is away: the next reading will tell
            log.warning("reading %s failed: %s", self.topic, exc)
            await self.close()
            return
        self.apply(definition)

    async def _newest(self) -> Experiment | None:
        consumer = self._consumer
        if consumer is None:
            consumer = Kafka.of(self.kafka).aio_consumer(group_id=None, enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
            tp = TopicPartition(self.topic, 0)  # ctr.experiments has one partition
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
        key, latest = self.results.experiment.name.encode(), None
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for msg in records:
                if msg.key == key and msg.value:
                    latest = msg.value
        return Experiment.from_dict(orjson.loads(latest)) if latest else None

    async def close(self) -> None:
        """Stop the follower's consumer (the next :meth:`follow` starts a new one)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def enforce(self) -> list[str]:
        """Stop every arm whose guardrail is breached significantly; returns the arms stopped."""
        stopped = []
        for breach in self.results.breaches():
            name = self.results.experiment.name
            try:
                definition = await self._off_loop(
                    registry.stop_arm,
                    self.kafka,
                    self.topic,
                    name,
                    breach.arm,
                    reason=breach.reason,
                    by=self.by,
                    guardrail=breach.metric,
                )
            except Exception as exc:  # the broker is away, or the run changed: the next refresh tries again
                log.error("%s; the stop could not be published: %s", breach.reason, exc)
                continue
            log.warning("experiment %r: %s; arm %s stopped by %s", name, breach.reason, breach.arm, self.by)
            if self.metrics is not None:
                self.metrics.guardrail_stops.labels(breach.arm, breach.metric).inc()
            self.apply(definition)
            stopped.append(breach.arm)
        return stopped
