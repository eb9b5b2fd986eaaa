"""Reading the global model: every scorer follows *all* partitions of ``ctr.model`` and ``ctr.model.updates`` (no
consumer group), so each worker sees every version, and a starting trainer resumes from the newest full one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_ctr.broker.admin import topic_partitions
from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.models.delta import Delta, is_delta
from stream_ctr.models.snapshot import Snapshot, SnapshotHolder, decode_update
from stream_ctr.monitoring.prometheus import ModelMetrics
from stream_ctr.topics import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

#: How often a held-back update asks its gate again, in seconds.
GATE_POLL_S = 0.005

__all__ = ["SnapshotFollower", "assigned_consumer", "read_latest_snapshot", "read_newest_version"]


async def assigned_consumer(kafka: KafkaTarget, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer outside any group, every partition of ``topic`` assigned (and those partitions)."""
    kafka = Kafka.of(kafka)
    consumer = kafka.aio_consumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a seek before the log start lands on its start
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=MAX_RECORD_BYTES,
    )
    parts = await asyncio.get_running_loop().run_in_executor(None, topic_partitions, kafka, topic)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    return consumer, tps


async def _last_records(kafka: KafkaTarget, topic: str) -> list[bytes]:
    """The last record of each partition of ``topic`` (none for an empty partition)."""
    consumer, tps = await assigned_consumer(kafka, topic)
    try:
        ends = await consumer.end_offsets(tps)
        values = []
        for tp in tps:
            if ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)
            records = await consumer.getmany(tp, timeout_ms=10000)
            values += [msg.value for msg in records.get(tp, [])]
        return values
    finally:
        await consumer.stop()


async def read_latest_snapshot(kafka: KafkaTarget, topic: str) -> Snapshot | None:
    """The newest full snapshot on ``topic`` (``ctr.model``), or None when nothing was ever published."""
    snaps = [Snapshot.from_bytes(value) for value in await _last_records(kafka, topic)]
    return max(snaps, key=lambda snap: snap.version, default=None)


async def read_newest_version(kafka: KafkaTarget, topic: str) -> int | None:
    """The version of the last record on the update chain ``topic``, or None when it is empty."""
    return max((decode_update(value).version for value in await _last_records(kafka, topic)), default=None)


class SnapshotFollower:
    """Keeps a worker's :class:`SnapshotHolder` on the newest version of the global model.

    :meth:`run` (a Faust task) starts from the newest full snapshot on ``ctr.model``, then follows the update chain
    ``ctr.model.updates`` from ``window`` records before its end: a full snapshot is built (off the event loop)
    and swapped in if newer; a delta is applied in place if it is based on the version in use, skipped if it is
    not newer, and counted as a gap otherwise (the next full snapshot repairs it). Scorers read
    ``holder.current`` once per batch.

    ``gate`` holds back an update trained past what the worker has read (:meth:`Staleness.covers
    <stream_ctr.monitoring.freshness.Staleness.covers>`): a trainer that runs ahead of the worker would otherwise hand
    it a model that already learned the events it is about to score, and its progressive metrics would no longer be
    test-then-train. The first model is never held back: nothing can be scored without one.
    """

    def __init__(
        self,
        kafka: KafkaTarget,
        topics_: tuple[str, str],
        metrics: ModelMetrics,
        window: int = 2002,
        gate: Callable[[Mapping[int, int]], bool] = lambda offsets: True,
    ):
        self.kafka, (self.model_topic, self.updates_topic), self.metrics = Kafka.of(kafka), topics_, metrics
        self.window = window
        self.holder = SnapshotHolder()
        #: Whether an update trained up to these ``ctr.events`` offsets may be used now; the follower waits (and
        #: reads no further update) until it may.
        self.gate = gate

    def offer(self, snap: Snapshot) -> bool:
        """Swap ``snap`` in now (building it here); tests and the first snapshot use this."""
        return self._swapped(snap) if self.holder.offer(snap) else False

    def take(self, delta: Delta) -> bool:
        """Apply ``delta`` if it continues the version in use; returns whether it did."""
        current = self.holder.current
        if current is None or delta.version <= current.version:
            return False
        if delta.base != current.version:
            self.metrics.gaps.inc()
            return False
        self.holder.advance(delta)
        self.metrics.delta_applied(delta)
        return True

    async def run(self) -> None:
        try:
            newest = await read_latest_snapshot(self.kafka, self.model_topic)
        except Exception:  # a foreign record must not stop scoring: the chain brings the next full snapshot
            log.exception("no readable snapshot on %s; following %s only", self.model_topic, self.updates_topic)
            newest = None
        if newest is not None:
            await self._swap(newest)
        consumer, tps = await assigned_consumer(self.kafka, self.updates_topic)
        try:
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, max(end - self.window, 0))  # past retention, aiokafka resets to the earliest
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for msg in (msg for batch in batches.values() for msg in batch):
                    await self._follow(msg)
        finally:
            await consumer.stop()

    async def _follow(self, msg) -> None:
        try:
            if is_delta(msg.value):  # a few KB: decoded and applied right here, between batches
                delta = Delta.from_bytes(msg.value)
                await self._wait_for_gate(delta.offsets)
                self.take(delta)
                return
            snap = await asyncio.get_running_loop().run_in_executor(None, Snapshot.from_bytes, msg.value)
        except Exception:  # a foreign record must not stop scoring
            log.exception("skipping unreadable record at %s offset %d", self.updates_topic, msg.offset)
            return
        if self.holder.is_newer(snap.version):
            await self._wait_for_gate(snap.offsets)
            await self._swap(snap)

    async def _wait_for_gate(self, offsets) -> None:
        while self.holder.current is not None and not self.gate(offsets):
            await asyncio.sleep(GATE_POLL_S)

    async def _swap(self, snap: Snapshot) -> None:
        # Building is a few ms of torch work that would otherwise stall scoring requests and batches.
        loaded = await asyncio.get_running_loop().run_in_executor(None, snap.build)
        if self.holder.swap(loaded):
            self._swapped(snap)

    def _swapped(self, snap: Snapshot) -> bool:
        self.metrics.model_swapped(snap)
        log.info("model v%d swapped in (global CTR %.4f, %d samples)", snap.version, snap.global_ctr, snap.samples)
        return True
