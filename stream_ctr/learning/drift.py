"""Drift detection: river's detectors over the worker's stream, and each user's band around the global CTR.

Stream signals (the closed set of the ``signal`` label; docs/ARCHITECTURE.md, section "Drift detection"):

- ``global_ctr``: every applied event's label, into ADWIN. The click rate of the whole stream moved.
- ``logloss_<arm>``: each arm's per-event logloss, averaged over blocks, into a one-sided (upward) Page-Hinkley
  test. An arm predicts worse than it did: taste changed under it.

Block means make the Page-Hinkley inputs close to normal and independent of how Faust cut the batches. A mean
local-vs-global gap was tried as a signal and dropped: ``p_g`` follows the stream within seconds and each
``p_u`` is shrunk toward it, so the signed mean gap stays near 0 through a change, while the mean |gap| rises
with every user's window filling in a stable stream (docs/ARCHITECTURE.md). The local-vs-global picture is the
per-user band below, exported as counts, not as an alarm. A signal
is *drifting* from its first alarm until ``hold_s`` pass without another; :meth:`DriftMonitor.state` says since
when. The detectors' state is a handful of numbers per signal (ADWIN's buckets grow with the log of its window).

A *user* is drifting when the click rate of the user's window lies more than ``z`` of its own sampling standard
deviations from ``p_g`` (:func:`user_z`): a user with 5 events needs a far larger gap than one with 100, so cold
users do not alarm.

>>> round(user_z(clicks=9, n=10, p_g=0.3), 2), round(user_z(clicks=12, n=20, p_g=0.3), 2), user_z(2, 3, 0.3)
(4.14, 2.93, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_ctr.quality.metrics import log_losses

__all__ = ["DriftMonitor", "DriftParams", "USER_MIN_EVENTS", "signals", "user_z"]

#: Fewer window events than this and a user's z is 0: the normal approximation means nothing below it.
USER_MIN_EVENTS = 10


def user_z(clicks: int, n: int, p_g: float) -> float:
    """``(clicks/n - p_g) / sqrt(p_g (1 - p_g) / n)``: the user's window CTR against the global CTR, in units of
    the binomial standard deviation of ``n`` events (0 below :data:`USER_MIN_EVENTS`)."""
    if n < USER_MIN_EVENTS or not 0.0 < p_g < 1.0:
        return 0.0
    return (clicks / n - p_g) / math.sqrt(p_g * (1.0 - p_g) / n)


def signals(arms) -> tuple[str, ...]:
    """Every signal name the monitor of these arms exports."""
    return ("global_ctr", *(f"logloss_{arm}" for arm in arms))


@dataclass(frozen=True)
class DriftParams:
    """Detector thresholds (settings ``STREAM_CTR_DRIFT_*``); the defaults are calibrated by
    ``tests/stream_ctr/test_drift.py`` on the synthetic stream: no alarm in a long stable stream."""

    block: int = 200  # events averaged into one Page-Hinkley input
    adwin_delta: float = 0.001  # ADWIN's confidence: smaller = fewer false alarms, later detection
    loss_threshold: float = 0.5  # Page-Hinkley lambda of the per-arm logloss block means
    ph_delta: float = 0.005  # Page-Hinkley tolerance: changes smaller than this are not drift
    warmup_blocks: int = 30  # blocks before a Page-Hinkley test may alarm (the models are still learning)
    hold_s: float = 600.0  # a signal stays "drifting" this long after its last alarm
    user_z: float = 3.0  # a user is drifting beyond this many sampling stds (user_z)

    @classmethod
    def from_settings(cls, settings) -> DriftParams:
        """The knobs operators tune; ``ph_delta`` and ``warmup_blocks`` keep their defaults."""
        s = settings
        return cls(
            block=s.drift_block,
            adwin_delta=s.drift_adwin_delta,
            loss_threshold=s.drift_loss_threshold,
            hold_s=s.drift_hold_s,
            user_z=s.user_drift_z,
        )


@dataclass
class _Signal:
    detector: Any  # a river drift detector (update, drift_detected); river has no type information
    per_event: bool  # ADWIN takes every value; Page-Hinkley takes block means
    total: float = 0.0
    count: int = 0
    alarms: int = 0
    first_alarm: float | None = None
    since: float | None = None  # when the current drifting episode began
    last_alarm: float = -math.inf
    history: list = field(default_factory=list)  # the last DriftMonitor.HISTORY alarm times, for the report

    def feed(self, values: np.ndarray, block: int) -> int:
        """Feed values; returns how many alarms they raised."""
        raised = 0
        if self.per_event:
            for v in values.tolist():
                self.detector.update(v)
                raised += self.detector.drift_detected
            return raised
        start = 0
        while start < len(values):
            take = min(block - self.count, len(values) - start)
            self.total += float(values[start : start + take].sum())
            self.count += take
            start += take
            if self.count == block:
                self.detector.update(self.total / block)
                raised += self.detector.drift_detected
                self.total, self.count = 0.0, 0
        return raised


class DriftMonitor:
    """The worker's detectors, one per signal of :func:`signals`."""

    HISTORY = 64  # alarm times kept per signal

    def __init__(self, arms, params: DriftParams = DriftParams()):
        from river import drift as river_drift  # here, not at import: settings read DriftParams' defaults

        self.params = params
        self.arms = tuple(arms)
        p = params
        self._signals = {"global_ctr": _Signal(river_drift.ADWIN(delta=p.adwin_delta), per_event=True)}
        for arm in self.arms:
            self._signals[f"logloss_{arm}"] = _Signal(
                river_drift.PageHinkley(
                    threshold=p.loss_threshold, mode="up", min_instances=p.warmup_blocks, delta=p.ph_delta
                ),
                per_event=False,
            )

    def observe(self, labels: np.ndarray, losses: dict[str, np.ndarray], now: float) -> list[str]:
        """One batch of applied events: their labels and each arm's per-event logloss, at time ``now``. Returns
        the signals that alarmed."""
        inputs = {"global_ctr": labels, **{f"logloss_{arm}": losses[arm] for arm in self.arms}}
        fired = []
        for name, values in inputs.items():
            sig = self._signals[name]
            values = np.asarray(values, dtype=float)
            raised = sig.feed(values[np.isfinite(values)], self.params.block)  # a NaN would poison the sums
            if raised:
                self._alarm(sig, raised, now)
                fired.extend([name] * raised)
        return fired

    def observe_predictions(self, labels: np.ndarray, preds: dict[str, np.ndarray], now: float) -> list[str]:
        """:meth:`observe` labels and each arm's predicted probabilities."""
        return self.observe(labels, {arm: log_losses(labels, preds[arm]) for arm in self.arms}, now)

    def observe_batch(self, result, now: float) -> list[str]:
        """:meth:`observe` a :class:`~stream_ctr.learning.loop.BatchResult` (its applied events)."""
        if not result.applied:
            return []
        _, labels, preds = result.arrays()
        return self.observe_predictions(labels, preds, now)

    def _alarm(self, sig: _Signal, raised: int, now: float) -> None:
        sig.alarms += raised
        if sig.first_alarm is None:
            sig.first_alarm = now
        if sig.since is None or now - sig.last_alarm > self.params.hold_s:
            sig.since = now
        sig.last_alarm = now
        sig.history = [*sig.history[-(self.HISTORY - 1) :], now]

    def state(self, now: float) -> dict[str, dict]:
        """Per signal: ``alarms`` so far, the ``first_alarm`` time, whether it is ``drifting`` at ``now`` and
        ``since`` when (else None), and the last alarm times."""
        out = {}
        for name, sig in self._signals.items():
            drifting = now - sig.last_alarm <= self.params.hold_s
            out[name] = {
                "alarms": sig.alarms,
                "first_alarm": sig.first_alarm,
                "drifting": drifting,
                "since": sig.since if drifting else None,
                "alarm_times": list(sig.history),
            }
        return out
