"""Per-arm statistics of an online experiment: ratio metrics by the delta method, and the sample-ratio check.

The randomisation unit is the user (:mod:`stream_ctr.experiments.assignment`), but CTR is a ratio over impressions. A
user's impressions are not independent (they share the user's taste and click habit), so treating them as Bernoulli
trials understates the variance. The delta method works on per-user sums instead: with ``R = sum(num) /
sum(den)`` and per-user residuals ``e_i = num_i - R * den_i``,

    Var(R) ~= Var(e) / (n * mean(den)^2)

which is the first-order expansion of ``mean(num) / mean(den)`` with the user-level covariance of the two sums.
Experiment arms hold disjoint users, so a difference of arms adds their variances (the *shadow* arms of the
service score the same users and are compared by the paired bootstrap of :mod:`stream_ctr.quality.bootstrap` instead).

A sample-ratio mismatch (arm sizes off the configured weights by more than chance) means the assignment or the
logging is broken and every other number of the experiment is suspect; :func:`srm_test` flags it.

>>> import numpy as np
>>> r = ratio_estimate(np.array([1, 0, 2]), np.array([2, 1, 3]))
>>> r.value, round(r.se, 6), r.users
(0.5, 0.144338, 3)
>>> srm_test({"a": 52_000, "b": 48_000}, {"a": 1, "b": 1}).alarm
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["SRM_ALPHA", "Difference", "Ratio", "SRM", "ratio_difference", "ratio_estimate", "srm_test"]

#: Significance of the sample-ratio alarm: strict, because the check runs continuously and a false alarm halts
#: the reading of an experiment.
SRM_ALPHA = 0.001

#: Two-sided 95% normal quantile.
_Z95 = 1.959963984540054


def _ci(value: float, se: float) -> tuple[float, float]:
    return value - _Z95 * se, value + _Z95 * se


@dataclass(frozen=True)
class Ratio:
    """``sum(num) / sum(den)`` over ``users`` users, its delta-method standard error and 95% CI."""

    value: float
    se: float
    ci: tuple[float, float]
    users: int


@dataclass(frozen=True)
class Difference:
    """Arm ``a`` against arm ``b``: ``delta = a - b`` and ``lift = a / b - 1``, each with its SE and 95% CI."""

    delta: float
    se: float
    ci: tuple[float, float]
    lift: float
    lift_se: float
    lift_ci: tuple[float, float]
    a: Ratio
    b: Ratio

    def __str__(self) -> str:
        """``+0.0131 * [+0.0020, +0.0242]`` (``*``: the CI excludes 0), as the reports print it."""
        star = " *" if self.ci[0] > 0 or self.ci[1] < 0 else ""
        return f"{self.delta:+.4f}{star} [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}]"


@dataclass(frozen=True)
class SRM:
    """Pearson chi-square of arm sizes against the configured split; ``alarm`` when ``p_value < alpha``."""

    chi2: float
    p_value: float
    alarm: bool
    expected: dict[str, float]


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> Ratio:
    """Ratio of per-user sums (one entry per user, e.g. clicks and impressions) with its delta-method SE.

    NaN where it is undefined: no denominator, or fewer than two users for the SE.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1-d and of one length, got {num.shape} and {den.shape}")
    n, total = len(den), float(den.sum())
    if total <= 0:
        return Ratio(math.nan, math.nan, (math.nan, math.nan), n)
    value = float(num.sum()) / total
    if n < 2:
        return Ratio(value, math.nan, (math.nan, math.nan), n)
    residual = num - value * den
    se = math.sqrt(float(residual @ residual) / (n - 1) / n) / (total / n)
    return Ratio(value, se, _ci(value, se), n)


def ratio_difference(a_num: np.ndarray, a_den: np.ndarray, b_num: np.ndarray, b_den: np.ndarray) -> Difference:
    """Arm ``a`` minus arm ``b`` (independent users), and the relative lift ``a / b - 1`` by the delta method.

    >>> import numpy as np
    >>> d = ratio_difference(np.array([1, 0, 2]), np.array([2, 1, 3]), np.array([1, 0, 2]), np.array([2, 1, 3]))
    >>> d.delta, d.lift, d.ci[0] < 0 < d.ci[1]
    (0.0, 0.0, True)
    """
    a, b = ratio_estimate(a_num, a_den), ratio_estimate(b_num, b_den)
    delta = a.value - b.value
    se = math.hypot(a.se, b.se)
    if b.value == 0 or math.isnan(b.value):
        lift = lift_se = math.nan
    else:
        q = a.value / b.value
        lift = q - 1
        lift_se = math.hypot(a.se, q * b.se) / abs(b.value)
    return Difference(delta, se, _ci(delta, se), lift, lift_se, _ci(lift, lift_se), a, b)


def srm_test(observed: Mapping[str, int], weights: Mapping[str, float], alpha: float = SRM_ALPHA) -> SRM:
    """Sample-ratio mismatch: are the users per arm consistent with the (normalised) weights?

    Every observed arm must have a weight; an arm with a weight and no users counts 0.

    >>> s = srm_test({"a": 500, "b": 500}, {"a": 0.5, "b": 0.5})
    >>> s.chi2, s.p_value, s.alarm, s.expected
    (0.0, 1.0, False, {'a': 500.0, 'b': 500.0})
    """
    from scipy.special import chdtrc  # scipy.stats would cost a second of import; this is all we need

    unknown = set(observed) - set(weights)
    if unknown:
        raise ValueError(f"observed arms without a weight: {sorted(unknown)}")
    if any(not w > 0 for w in weights.values()):
        raise ValueError(f"weights must be > 0, got {dict(weights)}")
    total_weight = float(sum(weights.values()))
    n = float(sum(observed.values()))
    expected = {arm: n * w / total_weight for arm, w in weights.items()}
    if n == 0 or len(weights) < 2:
        return SRM(0.0, 1.0, False, expected)
    chi2 = sum((observed.get(arm, 0) - e) ** 2 / e for arm, e in expected.items())
    p = float(chdtrc(len(weights) - 1, chi2))
    return SRM(float(chi2), p, p < alpha, expected)
