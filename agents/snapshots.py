"""Reading ``ctr.model``: every scorer follows *all* its partitions (no consumer group), so each worker sees
every snapshot, and a starting trainer resumes from the newest one."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_ctr.broker.admin import topic_partitions
from stream_ctr.monitoring import WorkerMetrics
from stream_ctr.snapshot import LoadedModel, Snapshot, SnapshotHolder
from stream_ctr.topics import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

__all__ = ["SnapshotFollower", "read_latest_snapshot"]


async def _assigned_consumer(bootstrap: str, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=MAX_RECORD_BYTES, fetch_max_bytes=MAX_RECORD_BYTES)
    parts = await asyncio.get_running_loop().run_in_executor(None, topic_partitions, bootstrap, topic)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    return consumer, tps


async def read_latest_snapshot(bootstrap: str, topic: str) -> Snapshot | None:
    """The newest snapshot on ``topic``, or None when nothing was ever published."""
    consumer, tps = await _assigned_consumer(bootstrap, topic)
    try:
        ends = await consumer.end_offsets(tps)
        newest: Snapshot | None = None
        for tp in tps:
            if ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)
            records = await consumer.getmany(tp, timeout_ms=10000)
            for msg in records.get(tp, []):
                snap = Snapshot.from_bytes(msg.value)
                if newest is None or snap.version > newest.version:
                    newest = snap
        return newest
    finally:
        await consumer.stop()


class SnapshotFollower:
    """Keeps a worker's :class:`SnapshotHolder` on the newest snapshot of ``ctr.model``.

    :meth:`offer` swaps a snapshot in (if newer) and updates the model gauges; :meth:`run` feeds it every record of
    the topic, from the beginning, forever (a Faust task). Scorers read ``holder.current`` once per batch.
    """

    def __init__(self, bootstrap: str, topic: str, metrics: WorkerMetrics):
        self.bootstrap, self.topic, self.metrics = bootstrap, topic, metrics
        self.holder = SnapshotHolder()

    def offer(self, snap: Snapshot) -> bool:
        """Swap ``snap`` in now (building it here); tests and the first snapshot use this."""
        return self._swapped(snap) if self.holder.offer(snap) else False

    async def run(self) -> None:
        consumer, tps = await _assigned_consumer(self.bootstrap, self.topic)
        loop = asyncio.get_running_loop()
        try:
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                records = [msg for batch in batches.values() for msg in batch]
                if records:  # only the newest of a burst is worth building
                    loaded = await loop.run_in_executor(None, self._load, records)
                    if loaded is not None and self.holder.swap(loaded):
                        self._swapped(loaded.snapshot)
        finally:
            await consumer.stop()

    def _load(self, records) -> LoadedModel | None:
        """Decode and build the newest readable snapshot among ``records``, off the event loop (a few ms of
        torch work that would otherwise stall scoring requests and batches)."""
        newest = None
        for msg in records:
            try:
                snap = Snapshot.from_bytes(msg.value)
            except Exception:  # a foreign record must not stop scoring
                log.exception("skipping unreadable record at %s offset %d", self.topic, msg.offset)
                continue
            if newest is None or snap.version > newest.version:
                newest = snap
        return newest.build() if newest is not None and self.holder.is_newer(newest.version) else None

    def _swapped(self, snap: Snapshot) -> bool:
        self.metrics.model_swapped(snap)
        log.info("model v%d swapped in (global CTR %.4f, %d samples)", snap.version, snap.global_ctr, snap.samples)
        return True
