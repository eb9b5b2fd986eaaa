"""Creating the declared topics (``topics/``) on a broker, idempotently."""

from __future__ import annotations

import contextlib
import time

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream_ctr.broker.connection import Kafka, KafkaTarget

__all__ = ["ensure_topics", "topic_partitions"]


def ensure_topics(kafka: KafkaTarget, specs) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; returns the names created."""
    admin = Kafka.of(kafka).admin(request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, s.replicas, topic_configs=s.kafka_config())
            for s in specs
            if s.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race: same declaration
                admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()


def topic_partitions(kafka: KafkaTarget, topic: str, timeout: float = 20.0) -> list[int]:
    """The partition ids of ``topic``, waiting up to ``timeout`` seconds for it to exist."""
    admin = Kafka.of(kafka).admin(request_timeout_ms=30000)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if topic in set(admin.list_topics()):
                (desc,) = admin.describe_topics([topic])
                parts = sorted(p["partition_index"] for p in desc["partitions"])
                if parts:
                    return parts
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} does not exist; run `stream-ctr up` or create the declared topics")
            time.sleep(0.2)
    finally:
        admin.close()
