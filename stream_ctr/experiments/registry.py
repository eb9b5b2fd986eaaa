"""The experiments a deployment has run, kept on the compacted ``ctr.experiments`` topic (key = name).

A worker starting an experiment reads the last definition under the same name and applies
:func:`~stream_ctr.experiments.assignment.check_transition`: the same salt with other weights is refused (it would move
users between arms mid-experiment); coverage may ramp; a new salt starts a new experiment. Then it publishes the
definition it runs, so the next worker, or the next restart, checks against it.
"""

from __future__ import annotations

import orjson

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.broker.read import read_topic
from stream_ctr.experiments.assignment import Experiment, check_transition

__all__ = ["last_definition", "register"]


def last_definition(kafka: KafkaTarget, topic: str, name: str) -> Experiment | None:
    """The newest definition of experiment ``name`` on ``topic`` (one partition), or None."""
    latest = None
    for msg in read_topic(kafka, topic):
        if msg.key == name.encode() and msg.value:
            latest = msg.value
    return Experiment.from_dict(orjson.loads(latest)) if latest else None


def register(kafka: KafkaTarget, topic: str, experiment: Experiment) -> Experiment | None:
    """Check ``experiment`` against what ran before under its name, then record it. Returns the previous
    definition; raises :class:`~stream_ctr.experiments.assignment.ExperimentError` for an illegal change."""
    previous = last_definition(kafka, topic, experiment.name)
    check_transition(previous, experiment)
    if previous != experiment:
        producer = Kafka.of(kafka).producer(acks="all")
        try:
            producer.send(topic, key=experiment.name.encode(), value=orjson.dumps(experiment.to_dict()))
            producer.flush()
        finally:
            producer.close()
    return previous
