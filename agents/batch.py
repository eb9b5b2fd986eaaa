"""One batch of the personalize worker: validate, dead-letter the bad records, test-then-train the good ones.

:class:`PersonalizeStep` is the unit the agent calls per batch. It scores the whole batch with one model snapshot
(so a swap never lands mid-batch) and writes each user's state once per batch (one changelog record a user).
"""

from __future__ import annotations

from typing import MutableMapping, Sequence

from stream_ctr.events import InvalidEvent, parse_event
from stream_ctr.heads import HeadParams
from stream_ctr.learning import BatchResult, test_then_train
from stream_ctr.monitoring import WorkerMetrics
from stream_ctr.snapshot import SnapshotHolder
from stream_ctr.state import UserState

from .dead_letters import DeadLetters

__all__ = ["PersonalizeStep"]


class PersonalizeStep:
    def __init__(self, users: MutableMapping[str, UserState], holder: SnapshotHolder, metrics: WorkerMetrics,
                 dead_letters: DeadLetters, params: HeadParams):
        self.users = users  # the Faust table in a worker; any mapping in the in-process tests
        self.holder = holder
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.params = params

    async def __call__(self, batch: Sequence) -> BatchResult:
        """Process Faust ``batch`` (events with ``.key``, ``.value``, ``.message``) in offset order."""
        records, partition_of = [], {}
        for event in batch:
            try:
                parsed = parse_event(event.value, event.key)
            except InvalidEvent as err:
                await self.dead_letters.send(event, err)
                continue
            records.append((parsed, event.message.offset))
            partition_of[parsed.user_id] = event.message.partition
        model = self.holder.current  # one model for the whole batch: swaps are atomic per batch
        with self.metrics.batch_seconds.time():
            result = test_then_train(records, model, self.users, self.params)
        self.metrics.observe(result, partition_of)
        return result
