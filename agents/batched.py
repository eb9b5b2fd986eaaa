"""Batched consumption: the records of one topic go from Kafka's fetch to a batch handler, not one by one.

Faust hands every record to its agents one at a time: a ``Message`` and an ``Event`` per record, two tasks raced
per record (the record and the flow-control wait), a lock, a queue put and a stream iteration, and an ack per
record. A py-spy profile of the worker draining ``ctr.events`` put that machinery at about 80% of the worker's
time and the worker's own batch step at 10% (docs/BENCHMARKS.md).

:func:`consume_in_batches` registers one topic of an app for batched consumption. The app's consumer then
drains its fetches itself: the records of that topic (aiokafka ``ConsumerRecord``), of every partition a fetch
brought, go to the handler in chunks (``step_events`` records while the consumer keeps up, up to ``batch_size`` with
a backlog), in offset order per partition, and every other
topic's records take Faust's usual path
(the tables' changelogs during recovery). The guarantees of the per-record path are kept, because its own
bookkeeping is reused:

- a chunk is acked in the consumer's ack lists only after the handler has returned, that is, after the table
  writes of its events were handed to the producer; Faust's commit flushes the producer (waiting for every write,
  see :mod:`.faust_compat`) before it commits those offsets, so an offset is never committed ahead of the state it
  covers;
- records below a partition's read offset (a seek back after recovery) are dropped, as Faust drops them;
- a fetch that arrives while flow is stopped, or a chunk handled across a rebalance (the generation changed), is
  not acked: the partition's next owner reads it again from the committed offset, and per-user offsets make the
  replay a no-op for the events already applied.

What the per-record path had and this one does not: Faust's per-message sensors (``on_message_in`` and friends)
do not see the batched topic; the worker's own metrics count its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import faust

from . import faust_compat

__all__ = ["BatchHandler", "consume_in_batches"]

log = logging.getLogger(__name__)

#: Called with one chunk of records of one fetch, each with ``.topic .partition .offset .key .value``.
BatchHandler = Callable[[Sequence], Awaitable[object]]


#: A fetch of more than this many steps of ``step_events`` (a backlog) is cut into this many steps.
STEPS_PER_FETCH = 8


@dataclass(frozen=True)
class _Batched:
    """The fetch loop of an app with a batched topic, as :func:`.faust_compat.set_drain` takes it."""

    topic: str
    handler: BatchHandler
    batch_size: int
    step_events: int

    def step_size(self, fetched: int) -> int:
        """Records per handler call for a fetch of ``fetched``: ``step_events`` while the consumer keeps up (small
        steps: each is scored after the one before was learned), ``fetched / STEPS_PER_FETCH`` with a backlog
        (few calls: throughput), never more than ``batch_size``."""
        return min(self.batch_size, max(self.step_events, -(-fetched // STEPS_PER_FETCH)))

    async def __call__(self, consumer, fetcher) -> None:
        await _BatchedDrain(consumer, fetcher, self).run()


def consume_in_batches(
    app: faust.App, topic: faust.TopicT, handler: BatchHandler, batch_size: int, step_events: int | None = None
) -> None:
    """Consume ``topic`` (a topic of ``app``, subscribed here) through ``handler``, ``step_events`` records at a
    time while it keeps up and at most ``batch_size`` with a backlog (:meth:`_Batched.step_size`; None: always
    ``batch_size``). One topic per app; ``app`` made by :func:`~.app.create_app`."""
    app.topics.add(topic)  # subscribed like an agent's topic: assigned by the group, co-partitioned with tables
    step = batch_size if step_events is None else step_events
    faust_compat.set_drain(app, _Batched(topic.get_topic_name(), handler, batch_size, step))


def _by_partition(chunk: Sequence, tps: dict) -> dict:
    """The records of ``chunk`` by their fetch's topic-partition key (``tps``: ``(topic, partition)`` -> key), in
    their order."""
    parts: dict = {}
    for record in chunk:
        parts.setdefault(tps[record.topic, record.partition], []).append(record)
    return parts


class _BatchedDrain:
    """The fetcher's loop of one consumer with a batched topic (the body of ``Consumer._drain_messages``)."""

    def __init__(self, consumer, fetcher, batched: _Batched):
        self.consumer, self.fetcher, self.batched = consumer, fetcher, batched
        self.app = consumer.app

    def _stopping(self) -> bool:
        return self.consumer.should_stop or self.fetcher.should_stop

    async def run(self) -> None:
        consumer = self.consumer
        try:
            while not self._stopping():
                records, active = await consumer._wait_next_records(1.0)
                await asyncio.sleep(0)  # a fetch that returns at once must still let the loop run
                if records is None or self._stopping():
                    continue
                if not consumer.flow_active:  # as Faust's getmany: a fetch made before flow stopped is dropped
                    try:
                        await consumer.perform_seek()
                    except Exception as exc:  # a partition already revoked: the next assignment seeks again
                        log.warning("seek to committed offsets while flow stopped failed: %r", exc)
                    continue
                await self._dispatch(records, active)
        except consumer.consumer_stopped_errors:
            if not self.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.app.should_stop:
                raise

    async def _dispatch(self, records: dict, active) -> None:
        """Hand the batched topic's fresh records of every partition of the fetch to the handler together (one
        call per ``batch_size`` records, each partition's in offset order), then ack them per partition; the
        other topics' records go one by one. One call for all partitions pays the handler's fixed costs once per
        fetch, and its per-user steps run across the users of every partition at once."""
        consumer, generation = self.consumer, self.app.consumer_generation_id
        batched: list = []
        tps: dict = {}  # (topic, partition) -> the fetch's key of it
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                continue
            fresh = await self._fresh(tp, recs)
            if not fresh:
                continue
            if tp.topic != self.batched.topic:
                await self._one_by_one(tp, fresh)
                continue
            self.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
            tps[tp.topic, tp.partition] = tp
            batched += fresh
        size = self.batched.step_size(len(batched))
        for start in range(0, len(batched), size):
            chunk = batched[start : start + size]
            if not consumer.flow_active or self.app.consumer_generation_id != generation:
                return  # rebalancing: the new owner reads it again from the committed offset
            await self.batched.handler(chunk)
            await asyncio.sleep(0)  # the snapshot follower and HTTP run here: deltas land between batches
            if self.app.consumer_generation_id != generation:
                return  # handled, but the partition may have moved: not acked, replayed and skipped by offset
            for tp, part in _by_partition(chunk, tps).items():
                self._ack(tp, part)
        await self._maybe_commit()

    async def _fresh(self, tp, recs: Sequence) -> list:
        """The records after the partition's read offset; offsets missing between them (compaction, transaction
        markers) are filed as gaps, as Faust does, so that commits can pass them."""
        consumer, fresh = self.consumer, []
        last = consumer._read_offset[tp]
        acks = self.app.topics.acks_enabled_for(tp.topic)
        for record in recs:
            if last is not None and record.offset < last:
                continue  # before a seek back: read again from there
            if acks and last and record.offset - last > 1:
                await consumer._add_gap(tp, last + 1, record.offset)
            fresh.append(record)
            last = record.offset
        return fresh

    def _ack(self, tp, chunk: Sequence) -> None:
        """What ``Consumer.ack`` does for each record, once for the chunk."""
        from faust.types.tuples import ack_lock

        consumer = self.consumer
        with ack_lock:
            committed = consumer._committed_offset[tp]
            offsets = [r.offset for r in chunk if committed is None or r.offset >= committed]
            index = consumer._acked_index[tp]
            offsets = [o for o in offsets if o not in index]
            index.update(offsets)
            consumer._acked[tp].extend(offsets)
            consumer._n_acked += len(offsets)
        consumer._read_offset[tp] = chunk[-1].offset

    async def _maybe_commit(self) -> None:
        consumer = self.consumer
        every = self.app.conf.broker_commit_every
        if every is not None and consumer._n_acked >= every:
            consumer._n_acked = 0
            await consumer.commit()

    async def _one_by_one(self, tp, recs: Sequence) -> None:
        """Faust's path for a record of another topic: a message to the conductor, unless flow stops first."""
        consumer = self.consumer
        for record in recs:
            if not consumer.flow_active:
                return
            message = consumer._to_message(tp, record)
            await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
            consumer._read_offset[tp] = record.offset
