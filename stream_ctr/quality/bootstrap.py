"""Paired bootstrap over users: confidence intervals for gAUC and for gAUC differences between modes.

gAUC is the impression-weighted mean of per-user AUC (:func:`stream_ctr.quality.metrics.per_user_auc`). Every mode is
scored on the same users with the same labels, so one set of user resamples (drawn once from the seed) serves
every mode: the difference of two modes is computed on each resample, which is what makes the test *paired*.

>>> import numpy as np
>>> boot = UserBootstrap(np.array([10.0, 20.0, 30.0]), n_boot=200, seed=0)
>>> boot.mean(np.array([0.6, 0.7, 0.8])) == (6 + 14 + 24) / 60
True
>>> lo, hi = boot.ci(np.array([0.6, 0.7, 0.8]) - np.array([0.6, 0.7, 0.8]))
>>> (lo, hi)
(0.0, 0.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["UserBootstrap", "delta_cell"]


class UserBootstrap:
    """Weighted means of per-user values and their percentile CIs under user resampling."""

    def __init__(self, weights: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
        self.weights = np.asarray(weights, dtype=float)
        self.level = level
        n = len(self.weights)
        rng = np.random.default_rng(seed)
        # counts[b, i]: how often user i is drawn in resample b (the same resamples for every call).
        self.counts = np.zeros((n_boot, n), dtype=np.float64)
        if n:
            draws = rng.integers(0, n, size=(n_boot, n))
            for b in range(n_boot):
                self.counts[b] = np.bincount(draws[b], minlength=n)

    def mean(self, values: np.ndarray) -> float:
        if len(values) == 0:
            return float("nan")
        return float((values * self.weights).sum() / self.weights.sum())

    def replicates(self, values: np.ndarray) -> np.ndarray:
        cw = self.counts * self.weights
        return (cw @ np.asarray(values, dtype=float)) / cw.sum(axis=1)

    def estimate(self, values: np.ndarray) -> dict:
        """``{"delta": weighted mean, "ci": [lo, hi]}`` of ``values`` (one per user): a paired difference's row."""
        return {"delta": self.mean(values), "ci": list(self.ci(values))}

    def ci(self, values: np.ndarray) -> tuple[float, float]:
        """Percentile CI of the weighted mean of ``values`` (one per user; a difference for paired use)."""
        if len(values) == 0:
            return float("nan"), float("nan")
        reps = self.replicates(values)
        alpha = (1 - self.level) / 2
        lo, hi = np.quantile(reps, [alpha, 1 - alpha])
        return float(lo), float(hi)


def delta_cell(d: dict | None) -> str:
    """A difference and its CI for a markdown table, ``*`` when the CI excludes 0; empty for no estimate.

    >>> delta_cell({"delta": 0.0123, "ci": [0.002, 0.021]})
    '+0.0123 [+0.0020, +0.0210] *'
    """
    if not d:
        return ""
    lo, hi = d["ci"]
    return f"{d['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]{' *' if lo > 0 or hi < 0 else ''}"
