"""What every benchmark times with: best-of-N wall time, and waiting for a worker to have applied N events."""

from __future__ import annotations

import time

__all__ = ["timed", "wait_applied"]


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def wait_applied(stack, n: int, timeout: float = 120.0) -> None:
    """Until the stack's worker reports ``n`` applied events (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while stack.stats()["applied"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not apply {n} events in {timeout:.0f}s")
        time.sleep(0.2)
