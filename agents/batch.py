"""One batch of the personalize worker: validate, dead-letter the bad records, attribute the events that answer a
scoring request to its arm, and test-then-train the good ones; a record whose processing raises is dead-lettered
too (:mod:`stream_ctr.learning.isolation`), and the rest of its batch applied.

:class:`PersonalizeStep` is the unit the worker calls per chunk of fetched records (:mod:`.batched`). It scores
the whole batch with one model snapshot (so a swap never lands mid-batch) and writes each user's state once per
batch (one changelog record a user; a second one only the first time a user is counted among an experiment arm's
users).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from typing import Any

from stream_ctr.contracts.events import Event, InvalidEvent, parse_record
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults, PendingExposures, WaitingEvents
from stream_ctr.learning.catch_up import CatchUp, positions_of
from stream_ctr.learning.heads import HeadParams
from stream_ctr.learning.isolation import isolate
from stream_ctr.learning.loop import test_then_train
from stream_ctr.learning.state import UserState
from stream_ctr.models.snapshot import ModelSource
from stream_ctr.monitoring.freshness import Staleness
from stream_ctr.monitoring.prometheus import WorkerMetrics

from .dead_letters import FATAL, DeadLetters

__all__ = ["PersonalizeStep"]

#: How long an event naming an unknown request waits for the request's exposure (a scorer's, through Kafka).
WAIT_FOR_EXPOSURE_S = 5.0
#: Most events waiting so at once (the oldest stop waiting first: counted as unknown_request).
WAITING_EVENTS = 10_000


class PersonalizeStep:
    def __init__(
        self,
        users: MutableMapping[str, UserState],
        models: ModelSource,
        metrics: WorkerMetrics,
        dead_letters: DeadLetters,
        params: HeadParams,
        experiment: Experiment,
        pending: PendingExposures,
        results: ArmResults,
        partitions: int,
        staleness: Staleness,
        catch_up: CatchUp | None = None,
    ):
        self.users = users  # the Faust table in a worker; any mapping in the in-process tests
        self.models = models  # the catch-up's model when it is on, else the trainer's as it arrives
        self.catch_up = catch_up
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.params = params
        self.experiment, self.pending, self.results = experiment, pending, results
        self.partitions = partitions  # of ctr.events: a user's events must be on the user's partition
        self.staleness = staleness
        #: Events naming a request not (yet) pending here: a scorer's exposure still on its way through Kafka.
        self.waiting = WaitingEvents(WAIT_FOR_EXPOSURE_S, WAITING_EVENTS)

    async def __call__(self, batch: Sequence) -> None:
        """Process ``batch``, records of ``ctr.events`` in offset order per partition (aiokafka ``ConsumerRecord``
        or anything with ``.topic``, ``.partition``, ``.offset``, ``.key``, ``.value``). A record that fails
        validation is dead-lettered with its reason; one whose processing raises, with ``internal_error``
        (:mod:`stream_ctr.learning.isolation`); every other record is applied, and the batch never raises for one
        record."""
        parsed = []
        for record in batch:
            try:
                parsed.append((parse_record(record.value, record.key, record.partition, self.partitions), record))
            except InvalidEvent as err:
                await self.dead_letters.send(record, err)
            except FATAL:
                raise
            except Exception as exc:
                await self.dead_letters.internal_error(record, exc)
        model = self.models.current  # one model for the whole batch: swaps are atomic per batch
        assert model is not None, "personalize waits for the first snapshot before its first batch"
        applied: set[int] = set()  # ids of the events scored and learned (not the redeliveries skipped)
        for (_, record), error in isolate(parsed, lambda chunk: self._learn(chunk, model, applied), FATAL):
            await self.dead_letters.internal_error(record, error)
        scored = [(e, r) for e, r in parsed if id(e) in applied]  # in the order read
        if scored:
            self.staleness.events(
                model.snapshot.offsets,
                model.snapshot.trained_ts,
                [r.partition for _, r in scored],
                [r.offset for _, r in scored],
                [e.ts for e, _ in scored],
            )
        self.staleness.passed([r.partition for r in batch], [r.offset for r in batch])  # dead-lettered ones too

    def _learn(self, parsed: Sequence[tuple[Event, Any]], model, applied: set[int]) -> None:
        records = [(event, record.offset) for event, record in parsed]
        partition_of = {event.user_id: record.partition for event, record in parsed}
        unknown = model.encoder.unknown_features
        with self.metrics.batch_seconds.time():
            result = test_then_train(records, model, self.users, self.params, self.metrics.band_z, self.catch_up)
            if self.catch_up is not None:  # the trainer's step, here, on what was just scored
                positions = positions_of([r.partition for _, r in parsed], [r.offset for _, r in parsed])
                self.catch_up.learn(result.events, positions, result.user_steps)
        applied.update(id(e) for e in result.events)
        self.metrics.unknown_features.inc(model.encoder.unknown_features - unknown)
        self.metrics.observe(result, partition_of)
        self._count_new_users(self._attribute(result.events))

    def _attribute(self, events: list[Event]) -> dict[str, str]:
        """Record the applied events (never a skipped redelivery) that answer a pending scoring request; returns
        user -> arm of those in the experiment."""
        exposed, now = {}, time.time()
        for event in events:
            if event.request_id is None:
                continue
            match = self.pending.match(event.request_id, event.item_id, now)
            if match == "unknown_request":
                self.waiting.park(event.request_id, event, event.user_id, now)
            elif isinstance(match, str):
                self.results.unattributed[match] += 1
            else:
                served, score = match
                if served.in_experiment and served.epoch == self.experiment.epoch:  # not a finished epoch's exposure
                    self.results.impression(served.arm, event.user_id, event.label, score)
                    exposed[event.user_id] = served.arm
        self.results.unattributed["unknown_request"] += self.waiting.expire(now)
        return exposed

    def exposure_arrived(self, request_id: str) -> None:
        """A scorer's exposure of ``request_id`` is pending now: attribute the events that were waiting for it."""
        events = self.waiting.take(request_id)
        if events:
            self._count_new_users(self._attribute(events))

    def _count_new_users(self, exposed: dict[str, str]) -> None:
        """Count each user once among its arm's users (for the sample-ratio check), remembered in its state."""
        key = self.experiment.key
        for user, arm in exposed.items():
            state = self.users.get(user)
            if state is not None and state.experiment_key != key:
                state.experiment_key = key
                self.users[user] = state
                self.results.new_user(arm)
