"""Producing click events to ``ctr.events`` with kafka-python: key = user id, value = event JSON (orjson)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaProducer

from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.contracts.events import Event, encode_event
from stream_ctr.topics import MAX_RECORD_BYTES

__all__ = ["MALFORMED_SAMPLES", "replay"]

#: One example of each kind of bad record, for demos and tests of the dead-letter path.
MALFORMED_SAMPLES: tuple[tuple[bytes | None, bytes], ...] = (
    (b"u-bad", b"{not json"),
    (b"u-bad", b"[1, 2, 3]"),
    (b"u-bad", b'{"event_id": "x1", "item_id": "i", "ts": 1, "label": 1}'),
    (b"u-bad", b'{"event_id": "x2", "user_id": "u-bad", "item_id": "i", "ts": 1, "label": 3}'),
    (b"u-bad", b'{"event_id": "x3", "user_id": "u-bad", "item_id": "i", "ts": 1e15, "label": 0}'),
    (b"someone-else", b'{"event_id": "x4", "user_id": "u-bad", "item_id": "i", "ts": 1, "label": 0}'),
    (None, b'{"event_id": "x5", "user_id": "u-bad", "item_id": "i", "ts": 1, "label": 0}'),
    (b"u-bad", b'{"event_id": "x6", "user_id": "u-bad", "item_id": "' + b"i" * 300 + b'", "ts": 1, "label": 0}'),
)


def producer(kafka: KafkaTarget) -> KafkaProducer:
    """Acknowledged by all in-sync replicas, in order (one request in flight), records up to the topics' limit."""
    return Kafka.of(kafka).producer(
        linger_ms=20,
        batch_size=256 * 1024,
        acks="all",
        compression_type=None,
        max_in_flight_requests_per_connection=1,
        max_request_size=MAX_RECORD_BYTES,
    )


def replay(
    events: Iterable[Event],
    kafka: KafkaTarget,
    topic: str,
    rate: float = 0.0,
    malformed_every: int = 0,
) -> tuple[int, int]:
    """Send ``events`` in order at ``rate`` events/s (0 = as fast as the broker takes them).

    With ``malformed_every`` = N, one of :data:`MALFORMED_SAMPLES` follows every N-th event. Returns
    ``(events sent, malformed sent)``; every send is acknowledged (flushed) before it returns.
    """
    prod = producer(kafka)
    sent = bad = 0
    start = time.monotonic()
    try:
        for event in events:
            prod.send(topic, key=event.user_id.encode(), value=encode_event(event))
            sent += 1
            if malformed_every and sent % malformed_every == 0:
                key, value = MALFORMED_SAMPLES[bad % len(MALFORMED_SAMPLES)]
                prod.send(topic, key=key, value=value)
                bad += 1
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        prod.flush()
    finally:
        prod.close()
    return sent, bad
