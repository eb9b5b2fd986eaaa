"""Creating the declared topics (``topics/``) on a broker, idempotently."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

__all__ = ["ensure_topics"]


def ensure_topics(bootstrap: str, specs) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(s.name, s.partitions, 1, topic_configs=s.kafka_config())
               for s in specs if s.name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process won the race; the declaration is the same
        return [t.name for t in new]
    finally:
        admin.close()
