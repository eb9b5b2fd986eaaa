"""Consumer lag and stalled partitions, read from the broker: a group's committed offsets against the end offsets.

The reading does not go through the consumer it watches, so a consumer that hangs cannot also hide that it hangs.
A partition is *stalled* when it has events waiting (lag > 0) and its committed offset has not moved for
``stall_after_s`` seconds: the failure mode that is otherwise silent (a partition that stops being consumed after
a crash or a broker restart while the process stays up and healthy).

>>> d = StallDetector(stall_after_s=30)
>>> d.update({0: (10, 50)}, now=0.0), d.update({0: (10, 50)}, now=31.0), d.update({0: (20, 50)}, now=32.0)
(set(), {0}, set())
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from kafka import TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError

from stream_ctr.broker.connection import Kafka, KafkaTarget

__all__ = ["StallDetector", "group_lag", "retrying"]


def group_lag(kafka: KafkaTarget, group: str, topic: str, partitions) -> dict[int, tuple[int, int]]:
    """``{partition: (committed, end)}`` of ``group`` on ``topic`` (committed 0 where the group has none yet)."""
    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return {}
    admin = Kafka.of(kafka).admin(request_timeout_ms=10000)
    try:
        committed = retrying(lambda: admin.list_group_offsets({group: tps}).get(group, {}))
        ends = admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
    finally:
        admin.close()
    return {tp.partition: (max(committed[tp].offset, 0) if tp in committed else 0, ends[tp].offset) for tp in tps}


def retrying(call, attempts: int = 10, pause_s: float = 0.5):
    """``call()``, again after a retriable broker error (e.g. the group coordinator still being elected)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaError as exc:
            if not exc.retriable or attempt == attempts - 1:
                raise
            time.sleep(pause_s)


class StallDetector:
    """Which partitions have had events waiting and no committed progress for ``stall_after_s`` seconds. Keeps one
    entry per partition it was last shown (a bounded set: the partitions a worker owns)."""

    def __init__(self, stall_after_s: float):
        self.stall_after_s = stall_after_s
        self._since: dict[int, tuple[int, float]] = {}  # partition -> (committed, when it last moved or caught up)

    def update(self, lags: Mapping[int, tuple[int, int]], now: float) -> set[int]:
        """Take a reading ``{partition: (committed, end)}`` at time ``now``; returns the stalled partitions."""
        stalled = set()
        for partition, (committed, end) in lags.items():
            seen = self._since.get(partition)
            if seen is None or seen[0] != committed or committed >= end:
                self._since[partition] = (committed, now)  # moved, caught up, or new to this worker
            elif now - seen[1] >= self.stall_after_s:
                stalled.add(partition)
        for partition in set(self._since) - set(lags):
            del self._since[partition]  # moved to another worker
        return stalled
