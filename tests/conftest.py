"""Shared fixtures. Broker-tier tests get one real Kafka per session (or ``KAFKA_BOOTSTRAP``) and isolate by
unique topic prefixes, app ids and ports."""

from __future__ import annotations

import itertools
import os
import socket
import uuid

import pytest

from stream_ctr.config import Settings

_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka():
    from stream_ctr.broker.kafka import broker_for

    broker = broker_for(os.environ.get("KAFKA_BOOTSTRAP", "")).start()
    yield broker
    broker.stop()


@pytest.fixture
def settings_factory(kafka):
    """``settings_factory(**overrides)``: settings on the session broker with a fresh topic prefix, app id and
    two free ports (worker, worker + 1 for the trainer)."""

    def make(**overrides) -> Settings:
        tag = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
        port = free_port()
        while True:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                port = free_port()
        base = dict(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"{tag}.", app_id=f"stream-ctr-{tag}",
                    web_port=port, features="category,segment", snapshot_every=1000, batch_size=128,
                    batch_within_s=0.2)
        return Settings.from_env({}, **{**base, **overrides})

    return make
