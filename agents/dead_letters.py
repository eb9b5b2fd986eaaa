"""The dead-letter path: a record that fails validation goes to ``ctr.events.dlq`` untouched, with why and where.

The value and key are the original raw bytes; headers carry ``reason`` (a closed set,
:data:`stream_ctr.events.DLQ_REASONS`), ``detail`` and the source ``topic``, ``partition`` and ``offset``, so an
operator can find and replay it. Every dead letter is counted by reason.
"""

from __future__ import annotations

from stream_ctr.events import InvalidEvent
from stream_ctr.monitoring import WorkerMetrics

__all__ = ["DeadLetters"]


class DeadLetters:
    def __init__(self, topic, metrics: WorkerMetrics):
        self.topic = topic  # a Faust topic (anything with an async ``send(key=, value=, headers=)``)
        self.metrics = metrics

    async def send(self, record, err: InvalidEvent) -> None:
        """Dead-letter one consumed ``record`` (``.topic .partition .offset`` and its raw ``.key .value``)."""
        headers = {"reason": err.reason.encode(), "detail": err.detail.encode(), "topic": record.topic.encode(),
                   "partition": str(record.partition).encode(), "offset": str(record.offset).encode()}
        await self.topic.send(key=record.key, value=record.value or b"", headers=headers)
        self.metrics.dead_lettered(err.reason)
