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

A bandit experiment's epochs (:mod:`.bandit`) are published by the allocator (``stream-ctr ab bandit``) with
:func:`publish_epoch`: the epoch's definition under the experiment's key and an audit record (``action: epoch``:
the epoch, the counts its weights came from, the weights before and after) under ``<name>/audit/epoch-<n>``, one
key per epoch, so a duplicate publication of an epoch replaces its record instead of adding one. A worker
(re)starting with the file runs the newest epoch on the topic (:meth:`~.assignment.Experiment.continuing`); the
first registration of a bandit run records when it started (``bandit.start_ts``), from which the epochs count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import orjson

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.broker.read import read_topic
from stream_ctr.experiments.assignment import Experiment, ExperimentError, Stop, check_transition, later_epoch

__all__ = [
    "audit_key",
    "history",
    "last_definition",
    "publish_epoch",
    "register",
    "registered",
    "resume_arm",
    "stop_arm",
    "utc_now",
]


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


def _publish(
    kafka: KafkaTarget, topic: str, experiment: Experiment, audit: dict[str, Any] | None = None, key: str = ""
) -> None:
    """The definition under the experiment's key, after its audit record (under ``key``, by default
    :func:`audit_key`)."""
    producer = Kafka.of(kafka).producer(acks="all")
    try:
        if audit is not None:
            key = key or audit_key(experiment.name, audit["at"], audit["arm"])
            producer.send(topic, key=key.encode(), value=orjson.dumps(audit))
        producer.send(topic, key=experiment.name.encode(), value=orjson.dumps(experiment.to_dict()))
        producer.flush()
    finally:
        producer.close()


def _register(kafka: KafkaTarget, topic: str, experiment: Experiment) -> tuple[Experiment | None, Experiment]:
    previous = last_definition(kafka, topic, experiment.name)
    effective = experiment.continuing(previous)
    check_transition(previous, effective)
    if effective.bandit is not None and effective.bandit.start_ts is None:  # a new bandit run starts now
        effective = dataclasses.replace(effective, bandit=effective.bandit.at(effective.epoch, time.time()))
    if previous != effective:
        _publish(kafka, topic, effective)
    return previous, effective


def register(kafka: KafkaTarget, topic: str, experiment: Experiment) -> Experiment | None:
    """Check ``experiment`` against what ran before under its name, then record what runs from now
    (:func:`registered`). Returns the previous definition; raises
    :class:`~stream_ctr.experiments.assignment.ExperimentError` for an illegal change."""
    return _register(kafka, topic, experiment)[0]


def registered(kafka: KafkaTarget, topic: str, experiment: Experiment) -> Experiment:
    """Like :func:`register`, but returns what runs from now: ``experiment`` with the stops of the running
    definition kept, or the running epoch of the same bandit run, with the run's start recorded."""
    return _register(kafka, topic, experiment)[1]


def publish_epoch(kafka: KafkaTarget, topic: str, new: Experiment, audit: dict[str, Any]) -> bool:
    """Publish ``new``, an epoch of a bandit run, with its ``audit`` record, unless the topic holds that epoch or
    a later one already (another allocator was first). Returns whether it published; raises
    :class:`ExperimentError` when ``new`` cannot follow the running definition."""
    previous = last_definition(kafka, topic, new.name)
    if previous is not None and later_epoch(new, previous, or_same=True):
        return False
    check_transition(previous, new)
    _publish(kafka, topic, new, audit, key=f"{new.name}/audit/epoch-{new.epoch}")
    return True


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
