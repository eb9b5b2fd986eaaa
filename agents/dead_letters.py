"""The dead-letter path: a record that fails validation goes to ``ctr.events.dlq`` untouched, with why and where.

The value and key are the original raw bytes; headers carry ``reason`` (a closed set,
:data:`stream_ctr.contracts.events.DLQ_REASONS`), ``detail`` and the source ``topic``, ``partition`` and ``offset``, so
an operator can find and replay it. Every dead letter is counted by reason. Besides invalid records, a valid record
whose processing raised goes here too, with reason ``internal_error`` (:mod:`stream_ctr.learning.isolation`): a bug met
by one record must not stop the consumer. Its traceback is logged the first time each kind of failure (exception type
and the line that raised it) is met, and every further one in a line, so one bad record shape cannot flood the log.
"""

from __future__ import annotations

import logging
import traceback

from aiokafka.errors import KafkaError

from stream_ctr.contracts.events import InvalidEvent
from stream_ctr.learning.isolation import FATAL as _FATAL

__all__ = ["FATAL", "DeadLetters"]

log = logging.getLogger(__name__)

#: Faults of the process, never of one record: the broker (past the client's own retries), the disk, memory.
FATAL = (KafkaError, *_FATAL)


class DeadLetters:
    def __init__(self, topic, metrics, role: str, max_kinds: int = 256):
        self.topic = topic  # a Faust topic (anything with an async ``send(key=, value=, headers=)``)
        self.metrics = metrics  # anything with ``dead_lettered(reason)``
        self.role = role  # which consumer dead-lettered it: the start of an internal error's detail
        self.max_kinds = max_kinds
        self._logged: set[tuple[str, str, int]] = set()

    async def send(self, record, err: InvalidEvent) -> None:
        """Dead-letter one consumed ``record`` (``.topic .partition .offset`` and its raw ``.key .value``)."""
        await self.send_reason(record, err.reason, err.detail)

    async def send_reason(self, record, reason: str, detail: str) -> None:
        """Dead-letter ``record`` for ``reason`` (one of :data:`stream_ctr.contracts.events.DLQ_REASONS`)."""
        headers = {
            "reason": reason.encode(),
            "detail": detail.encode("utf-8", "replace"),
            "topic": record.topic.encode(),
            "partition": str(record.partition).encode(),
            "offset": str(record.offset).encode(),
        }
        await self.topic.send(key=record.key, value=record.value or b"", headers=headers)
        self.metrics.dead_lettered(reason)

    async def internal_error(self, record, exc: BaseException) -> None:
        """Dead-letter ``record``, whose processing raised ``exc``, with reason ``internal_error``."""
        detail = f"{self.role}: {type(exc).__name__}: {exc}"[:1000]
        self._log(f"{record.topic}[{record.partition}]@{record.offset}", exc, detail)
        await self.send_reason(record, "internal_error", detail)

    def _log(self, where: str, exc: BaseException, detail: str) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        kind = (type(exc).__name__, frames[-1].filename, frames[-1].lineno or 0) if frames else (detail, "", 0)
        if kind in self._logged:
            log.warning("record %s dead-lettered (internal_error): %s", where, detail)
            return
        if len(self._logged) < self.max_kinds:
            self._logged.add(kind)
        log.error("record %s raised; dead-lettered with reason internal_error, the batch goes on", where, exc_info=exc)
