"""The experiments a deployment has run, kept on the compacted ``ctr.experiments`` topic (key = name).

A worker starting an experiment reads the last definition under the same name and applies
:func:`~stream_ctr.experiments.assignment.check_transition`: the same salt with other weights is refused (it would move
users between arms mid-experiment); coverage may ramp; a new salt starts a new experiment. Then it publishes the
definition it runs, so the next worker, or the next restart, checks against it. The stops of the running
definition are kept (:meth:`~stream_ctr.experiments.assignment.Experiment.keeping_stops_of`): restarting workers with
the original file does not bring back an arm a guardrail stopped.

:func:`stop_arm` (a guardrail on a worker, or ``stream-ctr ab stop``) and :func:`resume_arm` (``stream-ctr ab
resume``) publish a new definition of the running experiment with one arm's weight set to 0, or back to what it
was; every worker follows the topic and applies it. Each also writes an *audit record* under its own key
``<name>/audit/<time>/<arm>`` (so compaction, which keeps the newest record per key, keeps every one of them):
what was done (``stop`` or ``resume``), to which arm, why, by whom, when, and the weights before and after;
:func:`history` reads them back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.broker.read import read_topic
from stream_ctr.experiments.assignment import Experiment, ExperimentError, Stop, check_transition

__all__ = ["audit_key", "history", "last_definition", "register", "resume_arm", "stop_arm", "utc_now"]


def utc_now() -> str:
    """Now as ISO 8601 UTC to the millisecond (the ``at`` of a stop and of an audit record)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_key(name: str, at: str, arm: str) -> str:
    """The key of an audit record: never the experiment's own key, and unique per change.

    >>> audit_key("lc", "2026-01-01T00:00:00.000Z", "ft")
    'lc/audit/2026-01-01T00:00:00.000Z/ft'
    """
    return f"{name}/audit/{at}/{arm}"


def last_definition(kafka: KafkaTarget, topic: str, name: str) -> Experiment | None:
    """The newest definition of experiment ``name`` on ``topic`` (one partition), or None."""
    latest = None
    for msg in read_topic(kafka, topic):
        if msg.key == name.encode() and msg.value:
            latest = msg.value
    return Experiment.from_dict(orjson.loads(latest)) if latest else None


def history(kafka: KafkaTarget, topic: str, name: str) -> list[dict[str, Any]]:
    """The audit records of experiment ``name``, oldest first."""
    prefix = f"{name}/audit/".encode()
    return [orjson.loads(m.value) for m in read_topic(kafka, topic) if m.key and m.key.startswith(prefix) and m.value]


def _publish(kafka: KafkaTarget, topic: str, experiment: Experiment, audit: dict[str, Any] | None = None) -> None:
    producer = Kafka.of(kafka).producer(acks="all")
    try:
        if audit is not None:
            key = audit_key(experiment.name, audit["at"], audit["arm"])
            producer.send(topic, key=key.encode(), value=orjson.dumps(audit))
        producer.send(topic, key=experiment.name.encode(), value=orjson.dumps(experiment.to_dict()))
        producer.flush()
    finally:
        producer.close()


def register(kafka: KafkaTarget, topic: str, experiment: Experiment) -> Experiment | None:
    """Check ``experiment`` against what ran before under its name, then record it with the stops of the
    running definition kept. Returns the previous definition; raises
    :class:`~stream_ctr.experiments.assignment.ExperimentError` for an illegal change."""
    previous = last_definition(kafka, topic, experiment.name)
    check_transition(previous, experiment)
    effective = experiment.keeping_stops_of(previous)
    if previous != effective:
        _publish(kafka, topic, effective)
    return previous


def _change(kafka: KafkaTarget, topic: str, name: str, arm: str, action: str, change, reason: str, by: str):
    previous = last_definition(kafka, topic, name)
    if previous is None:
        raise ExperimentError(f"experiment.name: no experiment {name!r} on {topic}")
    new = change(previous)
    if new == previous:
        return previous
    check_transition(previous, new)
    audit = {
        "experiment": name,
        "salt": new.salt,
        "action": action,
        "arm": arm,
        "reason": reason,
        "by": by,
        "at": utc_now(),
        "weights_before": {a.name: a.weight for a in previous.arms},
        "weights_after": {a.name: a.weight for a in new.arms},
    }
    _publish(kafka, topic, new, audit)
    return new


def stop_arm(
    kafka: KafkaTarget, topic: str, name: str, arm: str, *, reason: str, by: str, guardrail: str = ""
) -> Experiment:
    """Publish the running definition of ``name`` with ``arm`` stopped (weight 0, its users served the control)
    and an audit record; returns the new definition (the current one, unpublished, if the arm was stopped
    already)."""

    def change(previous: Experiment) -> Experiment:
        return previous.stopping(arm, Stop(1.0, reason, by, utc_now(), guardrail))

    return _change(kafka, topic, name, arm, "stop", change, reason, by)


def resume_arm(kafka: KafkaTarget, topic: str, name: str, arm: str, *, reason: str, by: str) -> Experiment:
    """Publish the running definition of ``name`` with ``arm`` at its weight before the stop, and an audit
    record; returns the new definition. Raises :class:`ExperimentError` if the arm is not stopped."""
    return _change(kafka, topic, name, arm, "resume", lambda previous: previous.resuming(arm), reason, by)
