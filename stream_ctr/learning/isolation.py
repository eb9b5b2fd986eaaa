"""No poison pill: one record that makes processing raise never stops a consumer or its batch.

:func:`isolate` calls ``fn(items)``; if the call raises, the items are split in halves and each half tried again,
down to single items: those that raise alone come back with their exceptions (a consumer dead-letters them with
reason ``internal_error``), and every other item is processed. A poison item in a batch of ``n`` costs about
``2 log2 n`` extra calls; a clean batch costs nothing.

The contract on ``fn``: a call that raises has changed nothing (the worker's test-then-train and the trainer's
step write their results only after everything that can fail for a record has run), or what it changed makes a
retry skip those items (the worker's per-user offsets). Faults of the process rather than of an item (``fatal``:
the disk, memory, and in the agents the broker) are raised at once, never blamed on an item.

>>> isolate([1, 2, 0, 4], lambda xs: [1 / x for x in xs])
[(0, ZeroDivisionError('division by zero'))]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["FATAL", "isolate"]

T = TypeVar("T")

#: Exceptions that say the process, not an item, is at fault.
FATAL: tuple[type[BaseException], ...] = (OSError, MemoryError)


def isolate(
    items: Sequence[T], fn: Callable[[Sequence[T]], object], fatal: tuple[type[BaseException], ...] = FATAL
) -> list[tuple[T, Exception]]:
    """Process ``items`` with ``fn``; returns the items that raise on their own, each with its exception."""
    if not items:
        return []
    try:
        fn(items)
        return []
    except fatal:
        raise
    except Exception as exc:
        if len(items) == 1:
            return [(items[0], exc)]
    mid = len(items) // 2
    return isolate(items[:mid], fn, fatal) + isolate(items[mid:], fn, fatal)
