"""Shared fixtures, one place for the whole suite (laid out like the package: ``stream_ctr/``, ``agents/``,
``topics/``, ``grafana/``).

- ``kafka``: one real broker per test run (or ``KAFKA_BOOTSTRAP``); broker-tier tests isolate by unique topic
  prefixes, app ids and ports from ``settings_factory``;
- ``make_events``: the synthetic click factory (known per-user taste and prior);
- ``make_snapshot``: a global-model snapshot, untrained or trained on given events.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from stream_ctr.config import Settings
from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.process.net import free_port

_counter = itertools.count()

#: Settings of the Kafka-free tiers: the synthetic generator's two features and a small hash space.
OFFLINE = {"features": "category,segment", "hash_buckets": 2048}


@pytest.fixture(scope="session")
def kafka():
    from stream_ctr.broker.kafka import broker_for

    broker = broker_for(os.environ.get("KAFKA_BOOTSTRAP", "")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def settings_factory(kafka):
    """``settings_factory(**overrides)``: settings on the session broker with a fresh topic prefix, app id and
    two ports free when asked for (worker, trainer). A :class:`~stream_ctr.service.stack.Stack` holds them from its
    start, or others if they were taken meanwhile: read its ``settings`` or ``url(name)``, not these, for where its
    processes listen."""

    def make(**overrides) -> Settings:
        tag = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
        base = dict(
            kafka_bootstrap=kafka.bootstrap,
            topic_prefix=f"{tag}.",
            app_id=f"stream-ctr-{tag}",
            web_port=free_port(),
            trainer_web_port=free_port(),
            features="category,segment",
            delta_every=1000,
            batch_size=128,
        )
        return Settings.from_env({}, **{**base, **overrides})

    return make


@pytest.fixture(scope="session")
def make_events():
    """``make_events(users=, events_per_user=, seed=, **cfg)``: the synthetic generator's data (events in time
    order, true probabilities, per-user priors)."""

    def make(**cfg):
        return generate_synthetic(SyntheticConfig(**cfg))

    return make


@pytest.fixture(scope="session")
def make_snapshot():
    """``make_snapshot(settings=None, train_on=())``: a snapshot of the global trainer, trained on ``train_on``."""
    from stream_ctr.trainer.global_trainer import GlobalTrainer

    def make(settings: Settings | None = None, train_on=()):
        trainer = GlobalTrainer(settings or Settings.from_env({}, **OFFLINE))
        if train_on:
            trainer.learn_many(list(train_on))
        return trainer.snapshot()

    return make
