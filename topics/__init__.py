"""Every Kafka topic of stream-ctr, declared once: name, key, record type, partitions, compaction.

Agents, the replay producer, the admin that creates topics and the tests all read these declarations; nothing
else spells a topic name.

Installed as ``stream_ctr.topics`` (the folder keeps its top-level place in the repository).

>>> from stream_ctr.config import Settings
>>> [t.name for t in declared(Settings(topic_prefix="t1."))]
['t1.ctr.events', 't1.ctr.events.dlq', 't1.ctr.model']
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_RECORD_BYTES", "TopicSpec", "declared", "events", "dead_letters", "model"]

#: Largest record stream-ctr writes or reads (a model snapshot; the default DeepFM is ~1.2 MB). The broker, the
#: model topic, producers and snapshot consumers all take this one value.
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    partitions: int
    compacted: bool = False
    config: dict = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete", **self.config}
        return {k: str(v) for k, v in cfg.items()}


def events(settings) -> TopicSpec:
    """Click events, JSON (:class:`stream_ctr.events.Event`), keyed by user id so a user stays on one partition."""
    return TopicSpec(settings.topic("ctr.events"), "user_id (utf-8)", "Event JSON", settings.events_partitions)


def dead_letters(settings) -> TopicSpec:
    """Events that failed validation: the raw bytes as value, headers ``reason``, ``detail`` and the source
    ``topic``/``partition``/``offset``."""
    return TopicSpec(settings.topic("ctr.events.dlq"), "original key", "original raw bytes", 1)


def model(settings) -> TopicSpec:
    """Global model snapshots (:class:`stream_ctr.snapshot.Snapshot`), key ``global``; compacted, so the newest
    snapshot is always there for a starting scorer."""
    return TopicSpec(settings.topic("ctr.model"), "model name", "Snapshot bytes", 1, compacted=True,
                     config={"max.message.bytes": MAX_RECORD_BYTES})


def declared(settings) -> list[TopicSpec]:
    return [events(settings), dead_letters(settings), model(settings)]
