"""Reading a whole topic from the beginning to its current end (for reports, not for serving)."""

from __future__ import annotations

from collections.abc import Iterator

from kafka import TopicPartition

from stream_ctr.broker.admin import topic_partitions
from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.topics import MAX_RECORD_BYTES

__all__ = ["end_offsets", "read_topic"]


def read_topic(kafka: KafkaTarget, topic: str) -> Iterator:
    """Every record of ``topic`` up to the end offsets at the time of the call (kafka-python messages)."""
    kafka = Kafka.of(kafka)
    consumer = kafka.consumer(
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=MAX_RECORD_BYTES,
    )
    try:
        tps = [TopicPartition(topic, p) for p in topic_partitions(kafka, topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for msg in records:
                    if msg.offset < ends[tp]:
                        yield msg
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()


def end_offsets(kafka: KafkaTarget, topic: str) -> dict[int, int]:
    """The next offset to be written, per partition of ``topic`` that has had records."""
    kafka = Kafka.of(kafka)
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in topic_partitions(kafka, topic)]
        return {tp.partition: end for tp, end in consumer.end_offsets(tps).items() if end > 0}
    finally:
        consumer.close()
