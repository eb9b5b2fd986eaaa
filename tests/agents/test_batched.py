"""The batched drain's own bookkeeping (agents/batched.py), without a broker: which fetched records are fresh,
which offsets are filed as gaps, and what a chunk's ack leaves in the consumer's ack lists."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from aiokafka.structs import ConsumerRecord, TopicPartition

from stream_ctr.agents.batched import STEPS_PER_FETCH, _Batched, _BatchedDrain, _by_partition

TP = TopicPartition("t", 0)


class _Consumer:
    def __init__(self, read_offset=None, committed=None):
        self._read_offset = defaultdict(lambda: None, {TP: read_offset})
        self._committed_offset = defaultdict(lambda: None, {TP: committed})
        self._acked, self._acked_index, self._n_acked = defaultdict(list), defaultdict(set), 0
        self.gaps = []
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    async def _add_gap(self, tp, start, stop):
        self.gaps.append((start, stop))


def _records(*offsets):
    return [ConsumerRecord("t", 0, o, 0, 0, b"k", b"v", None, 1, 1, []) for o in offsets]


def _drain(consumer):
    return _BatchedDrain(consumer, SimpleNamespace(), _Batched("t", None, 4, 4))


def test_records_before_the_read_offset_are_dropped_and_holes_filed_as_gaps():
    consumer = _Consumer(read_offset=5)
    fresh = asyncio.run(_drain(consumer)._fresh(TP, _records(3, 4, 5, 6, 9, 10)))
    assert [r.offset for r in fresh] == [5, 6, 9, 10]
    assert consumer.gaps == [(7, 9)]  # 7 and 8 never came (compaction, markers): commits may pass them


def test_a_chunk_is_acked_once_and_only_past_the_committed_offset():
    consumer = _Consumer(read_offset=None, committed=11)
    drain = _drain(consumer)
    drain._ack(TP, _records(10, 11, 12))
    drain._ack(TP, _records(12, 13))  # a redelivered record is not acked twice
    assert consumer._acked[TP] == [11, 12, 13] and consumer._n_acked == 3
    assert consumer._read_offset[TP] == 13


def test_steps_are_small_while_the_consumer_keeps_up_and_grow_with_a_backlog():
    batched = _Batched("t", None, batch_size=1024, step_events=24)
    assert batched.step_size(50) == 24  # three steps, each scored after the one before was learned
    assert batched.step_size(24 * STEPS_PER_FETCH) == 24
    assert batched.step_size(800) == 100  # a backlog: STEPS_PER_FETCH steps
    assert batched.step_size(100_000) == 1024  # never more than batch_size


def test_a_chunk_of_several_partitions_is_acked_per_partition_in_order():
    other = TopicPartition("t", 1)
    chunk = [*_records(5, 6), ConsumerRecord("t", 1, 9, 0, 0, b"k", b"v", None, 1, 1, []), *_records(7)]
    parts = _by_partition(chunk, {("t", 0): TP, ("t", 1): other})
    assert {tp: [r.offset for r in recs] for tp, recs in parts.items()} == {TP: [5, 6, 7], other: [9]}
