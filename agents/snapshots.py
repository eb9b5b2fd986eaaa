"""Reading ``ctr.model``: every scorer follows *all* its partitions (no consumer group), so each worker sees
every snapshot, and a starting trainer resumes from the newest one."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_ctr.snapshot import Snapshot

log = logging.getLogger(__name__)

__all__ = ["follow_snapshots", "read_latest_snapshot"]

_FETCH_BYTES = 64 * 1024 * 1024


async def _assigned_consumer(bootstrap: str, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=_FETCH_BYTES, fetch_max_bytes=_FETCH_BYTES)
    await consumer.start()
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            break
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)
    else:
        await consumer.stop()
        raise RuntimeError(f"topic {topic} does not exist; run `stream-ctr up` or create the declared topics")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
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


async def follow_snapshots(bootstrap: str, topic: str, on_snapshot: Callable[[Snapshot], None]) -> None:
    """Call ``on_snapshot`` for every snapshot on ``topic``, from the beginning, forever."""
    consumer, tps = await _assigned_consumer(bootstrap, topic)
    try:
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for msg in records:
                    try:
                        snap = Snapshot.from_bytes(msg.value)
                    except Exception:  # a foreign record must not stop scoring
                        log.exception("skipping unreadable record at %s offset %d", topic, msg.offset)
                        continue
                    on_snapshot(snap)
    finally:
        await consumer.stop()
