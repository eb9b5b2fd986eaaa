"""Faust's own figures, exported to the worker's Prometheus registry: how long offset commits and rebalances take.

A Faust :class:`~faust.Sensor` is called by the app at each commit and rebalance; this one times them into two
histograms of :class:`~stream_ctr.monitoring.prometheus.WorkerMetrics` (``stream_ctr_commit_seconds``,
``stream_ctr_rebalance_seconds``). Faust calls the commit hooks on every commit tick, also when nothing was
acknowledged since the last one; those no-op commits are not timed (they would pull every quantile to 0).
Events per second need no sensor: ``stream_ctr_events_total`` counts them.
"""

from __future__ import annotations

import time
from typing import Any

import faust

from stream_ctr.monitoring.prometheus import WorkerMetrics

from .faust_compat import acked_not_committed

__all__ = ["TimingSensor"]


class TimingSensor(faust.Sensor):
    def __init__(self, metrics: WorkerMetrics, **kwargs: Any):
        super().__init__(**kwargs)
        self.metrics = metrics

    def on_commit_initiated(self, consumer) -> tuple[float, bool]:
        return time.monotonic(), acked_not_committed(consumer)

    def on_commit_completed(self, consumer, state: tuple[float, bool]) -> None:
        started, pending = state
        if pending:
            self.metrics.commit_seconds.observe(time.monotonic() - started)

    def on_rebalance_start(self, app) -> dict:
        return {"time_start": time.monotonic()}

    def on_rebalance_end(self, app, state: dict) -> None:
        self.metrics.rebalance_seconds.observe(time.monotonic() - state["time_start"])
