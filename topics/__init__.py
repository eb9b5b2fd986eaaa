"""Every Kafka topic of stream-ctr, declared once: name, key, record type, partitions, compaction.

Agents, the replay producer, the admin that creates topics and the tests all read these declarations; nothing
else spells a topic name. The JSON records that other languages produce or consume have JSON Schema files beside
this module (``schemas/``, :func:`schema`): ``event`` for ``ctr.events`` and ``exposure`` for ``ctr.exposures``.

Installed as ``stream_ctr.topics`` (the folder keeps its top-level place in the repository).

>>> from stream_ctr.config import Settings
>>> [t.name.removeprefix("t1.ctr.") for t in declared(Settings(topic_prefix="t1."))]
['events', 'events.dlq', 'model', 'model.updates', 'exposures', 'experiments']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "MAX_RECORD_BYTES",
    "TopicSpec",
    "dead_letters",
    "declared",
    "events",
    "experiments",
    "exposures",
    "model",
    "model_updates",
    "schema",
]

_SCHEMAS = Path(__file__).parent / "schemas"

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
    replicas: int = 1
    min_insync: int = 1

    def kafka_config(self) -> dict[str, str]:
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "min.insync.replicas": self.min_insync,
            **self.config,
        }
        return {k: str(v) for k, v in cfg.items()}


def _personal(settings) -> dict:
    """The config of a topic of users' raw records: kept ``events_retention_hours`` (an erasure removes a user's
    state, not records already in a log, so this bounds how long they stay)."""
    return {"retention.ms": int(settings.events_retention_hours * 3_600_000)}


def events(settings) -> TopicSpec:
    """Click events, JSON (:class:`stream_ctr.contracts.events.Event`), keyed by user id so a user stays on one
    partition."""
    return TopicSpec(
        settings.topic("ctr.events"),
        "user_id (utf-8)",
        "Event JSON",
        settings.events_partitions,
        config=_personal(settings),
    )


def dead_letters(settings) -> TopicSpec:
    """Events that failed validation: the raw bytes as value, headers ``reason``, ``detail`` and the source
    ``topic``/``partition``/``offset``."""
    return TopicSpec(
        settings.topic("ctr.events.dlq"), "original key", "original raw bytes", 1, config=_personal(settings)
    )


def model(settings) -> TopicSpec:
    """Global model snapshots (:class:`stream_ctr.models.snapshot.Snapshot`), key ``global``; compacted, so the newest
    snapshot is always there for a starting scorer."""
    return TopicSpec(
        settings.topic("ctr.model"),
        "model name",
        "Snapshot bytes",
        1,
        compacted=True,
        config={"max.message.bytes": MAX_RECORD_BYTES},
    )


def model_updates(settings) -> TopicSpec:
    """The global model's update chain, in version order (:class:`stream_ctr.models.delta.Delta` records and, every
    ``full_snapshot_every`` deltas and after a trainer restart, full snapshots), key ``global``. Scorers follow it to
    stay within a few samples of the trainer; retention is bounded (an hour, 1 GiB) because ``ctr.model`` keeps
    the newest full snapshot for a starting scorer."""
    return TopicSpec(
        settings.topic("ctr.model.updates"),
        "model name",
        "Delta or Snapshot bytes",
        1,
        config={"max.message.bytes": MAX_RECORD_BYTES, "retention.ms": 3_600_000, "retention.bytes": 1 << 30},
    )


def exposures(settings) -> TopicSpec:
    """What ``POST /v1/score`` served, one JSON record per request (schema ``exposure``), keyed by user id like
    ``ctr.events``, so a user's exposures and events share a partition number."""
    return TopicSpec(
        settings.topic("ctr.exposures"),
        "user_id (utf-8)",
        "Exposure JSON",
        settings.events_partitions,
        config=_personal(settings),
    )


def experiments(settings) -> TopicSpec:
    """The experiment definitions workers have run, key = experiment name; compacted, so a starting worker reads
    what ran before and refuses a change of weights under the same salt."""
    return TopicSpec(settings.topic("ctr.experiments"), "experiment name", "Experiment JSON", 1, compacted=True)


def declared(settings) -> list[TopicSpec]:
    """Every topic, with the deployment's durability: ``replication_factor`` replicas, of which
    ``min_insync_replicas`` must have each acknowledged write."""
    return [
        replace(spec, replicas=settings.replication_factor, min_insync=settings.min_insync_replicas)
        for spec in (
            events(settings),
            dead_letters(settings),
            model(settings),
            model_updates(settings),
            exposures(settings),
            experiments(settings),
        )
    ]


def schema(name: str) -> dict:
    """The published JSON Schema of a record: ``event`` or ``exposure``."""
    return json.loads((_SCHEMAS / f"{name}.schema.json").read_text())
