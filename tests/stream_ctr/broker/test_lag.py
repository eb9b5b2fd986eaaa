"""Lag and stall detection: the detector's rules, and the committed-vs-end reading on the real broker."""

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream_ctr import topics
from stream_ctr.broker.admin import ensure_topics
from stream_ctr.broker.lag import StallDetector, group_lag


def test_a_partition_with_events_waiting_and_no_progress_stalls_after_the_threshold():
    d = StallDetector(stall_after_s=30)
    assert d.update({0: (5, 9), 1: (3, 3)}, now=0) == set()
    assert d.update({0: (5, 9), 1: (3, 3)}, now=29.9) == set()
    assert d.update({0: (5, 9), 1: (3, 3)}, now=30.0) == {0}  # 1 is caught up: idle, not stalled
    assert d.update({0: (6, 9), 1: (3, 3)}, now=31) == set()  # progress restarts the clock
    assert d.update({0: (6, 9), 1: (3, 8)}, now=59) == set()  # 1's events arrived at 31 at the latest
    assert d.update({0: (6, 9), 1: (3, 8)}, now=61.5) == {0, 1}


def test_partitions_that_leave_are_forgotten_and_start_afresh_when_they_return():
    d = StallDetector(stall_after_s=10)
    d.update({0: (1, 5)}, now=0)
    assert d.update({}, now=20) == set()
    assert d.update({0: (1, 5)}, now=25) == set()  # back after a rebalance: a new clock
    assert d.update({0: (1, 5)}, now=35) == {0}


@pytest.mark.broker
def test_group_lag_reads_committed_and_end_offsets(settings_factory):
    settings = settings_factory(events_partitions=2)
    ensure_topics(settings.kafka_bootstrap, topics.declared(settings))
    topic = topics.events(settings).name
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for i in range(7):
        producer.send(topic, value=b"x", partition=i % 2)
    producer.flush()
    producer.close()
    group = f"{settings.app_id}-lag"
    assert group_lag(settings.kafka_bootstrap, group, topic, [0, 1]) == {0: (0, 4), 1: (0, 3)}
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1)})
    finally:
        consumer.close()
    assert group_lag(settings.kafka_bootstrap, group, topic, [0, 1]) == {0: (3, 4), 1: (0, 3)}
    assert group_lag(settings.kafka_bootstrap, group, topic, []) == {}
