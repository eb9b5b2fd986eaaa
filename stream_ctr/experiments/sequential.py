"""Always-valid inference for an experiment that is read while it runs, and CUPED variance reduction.

A fixed-horizon confidence interval holds its 95% only when it is read once, at a sample size fixed in advance.
Read after every batch of requests (as a live dashboard is), the chance that some reading excludes 0 although
the arms are the same grows with every look (the "peeking problem"; `stream-ctr ab aa` measures it). A
*confidence sequence* instead covers the true value at every sample size at once, with probability 1 - alpha,
however often and whenever it is read, and may be stopped on.

The sequence here is the normal-mixture asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy
and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (2021, arXiv 2103.06476,
Theorem 2.2 with Robbins' normal mixture): for an estimate that is a mean of ``t`` independent units with
standard deviation ``sigma``,

    estimate +- sigma * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

two-sided at level alpha. ``rho`` sets where the sequence is tightest: ``rho^2 = (-2 log alpha + log(-2 log alpha
+ 1)) / t_star`` makes it tightest at ``t_star`` units (their eq. 2.10). The same boundary is the always-valid
p-value of the mixture SPRT (Johari, Pekelis and Walsh 2017) with a normal mixing distribution.

For the user-randomised ratio metrics of :mod:`.stats` the units are users, ``sigma^2 = t * Var(difference)`` from
the delta method, and ``t`` the users of both arms.

**CUPED** (Deng, Xu, Kohavi and Walker 2013): a covariate measured before a user's first exposure (here their own
click rate before it) cannot be moved by the arm, so subtracting ``theta * (x - mean(x))`` from each user's
contribution keeps every arm's estimate unbiased and removes the share of its variance the covariate explains,
``corr(metric, x)^2``; ``theta`` is pooled over arms. For a ratio ``R = sum(num) / sum(den)`` the user's
contribution is its delta-method linearisation ``(num_i - R den_i) / mean(den)``.

**Sequential sample-ratio check** (Lindon and Malek, "Anytime-valid inference for multinomial count data", 2022):
under the configured split ``p`` the users' arms are a multinomial sequence; against a Dirichlet(``c * p``)
mixture of alternatives the Bayes factor ``B(c p + n) / B(c p) / prod(p_i^n_i)`` is a test martingale, so
``min(1, 1 / BF)`` is a p-value that may be read at every new user (:func:`srm_p_value`). The chi-square of
:func:`stream_ctr.experiments.stats.srm_test` is valid only at one planned reading.

>>> import numpy as np
>>> round(half_width(se=0.01, units=10_000, alpha=0.05, t_star=10_000) / (1.96 * 0.01), 2)  # the price of peeking
1.55
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream_ctr.experiments.stats import _Z95

__all__ = [
    "ALPHA",
    "PLANNED_USERS",
    "SequentialDifference",
    "half_width",
    "rho_squared",
    "sequential_difference",
    "srm_p_value",
]

#: Two-sided level of the sequences.
ALPHA = 0.05
#: Users at which a sequence is tightest unless an experiment plans otherwise: from 100 to 30,000 users its
#: half-width stays within 2x the fixed-horizon one (10,000 would make it 3.5x at 200 users).
PLANNED_USERS = 1_000


def rho_squared(alpha: float, t_star: float) -> float:
    """The mixture's variance that makes the sequence tightest at ``t_star`` units."""
    return (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / t_star


def half_width(se: float, units: int, alpha: float = ALPHA, t_star: float = PLANNED_USERS) -> float:
    """Half the width of the (1 - alpha) confidence sequence of an estimate with standard error ``se`` from
    ``units`` independent units; ``inf`` before there are two."""
    if units < 2 or not math.isfinite(se):
        return math.inf
    rho2 = rho_squared(alpha, t_star)
    sigma = se * math.sqrt(units)
    t = units
    return sigma * math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha))


@dataclass(frozen=True)
class SequentialDifference:
    """Arm ``b`` minus arm ``a`` of a ratio metric, read at one moment.

    ``fixed`` is the 95% fixed-horizon interval (valid only when read once, at a size fixed in advance);
    ``sequence`` the always-valid (1 - alpha) interval; ``cuped`` says whether the covariate adjustment was used
    and ``variance_reduction`` how much of the plain estimate's variance it removed (0 without)."""

    delta: float
    se: float
    fixed: tuple[float, float]
    sequence: tuple[float, float]
    users: int
    cuped: bool
    variance_reduction: float

    @property
    def significant(self) -> bool:
        """Whether the always-valid interval excludes 0 (a decision that may be taken at any reading)."""
        return bool(self.sequence[0] > 0 or self.sequence[1] < 0)

    @property
    def significant_fixed(self) -> bool:
        """Whether the fixed-horizon interval excludes 0 (valid only at the planned end)."""
        return bool(self.fixed[0] > 0 or self.fixed[1] < 0)


def _linearised(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
    """The ratio and each user's delta-method contribution to it."""
    ratio = num.sum() / den.sum()
    return ratio, (num - ratio * den) / den.mean()


def sequential_difference(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    covariate: tuple[np.ndarray, np.ndarray] | None = None,
    alpha: float = ALPHA,
    t_star: float = PLANNED_USERS,
) -> SequentialDifference:
    """``sum(num) / sum(den)`` of arm ``b`` minus arm ``a`` from per-user ``(num, den)`` (users with ``den > 0``),
    with its fixed and always-valid intervals; ``covariate``, per user of ``a`` and of ``b``, adds CUPED.

    >>> rng = np.random.default_rng(0)
    >>> den = rng.integers(1, 20, size=(2, 4000))
    >>> p = rng.beta(2, 6, size=(2, 4000))
    >>> num = rng.binomial(den, p)
    >>> plain = sequential_difference((num[0], den[0]), (num[1], den[1]))
    >>> cuped = sequential_difference((num[0], den[0]), (num[1], den[1]), covariate=(p[0], p[1]))
    >>> plain.significant_fixed, cuped.significant_fixed, round(cuped.variance_reduction, 2)  # arms drew unlike users
    (True, False, 0.46)
    """
    ra, ea = _linearised(*a)
    rb, eb = _linearised(*b)
    delta, reduction = rb - ra, 0.0
    var_plain = ea.var(ddof=1) / len(ea) + eb.var(ddof=1) / len(eb)
    var = var_plain
    if covariate is not None:
        xa, xb = (np.asarray(x, dtype=np.float64) for x in covariate)
        mean_x = np.concatenate([xa, xb]).mean()
        centred = [x - x.mean() for x in (xa, xb)]
        var_x = sum(float(c @ c) for c in centred)
        theta = sum(float(c @ e) for c, e in zip(centred, (ea, eb))) / var_x if var_x > 0 else 0.0
        delta -= theta * ((xb.mean() - mean_x) - (xa.mean() - mean_x))
        ea, eb = ea - theta * centred[0], eb - theta * centred[1]
        var = ea.var(ddof=1) / len(ea) + eb.var(ddof=1) / len(eb)
        reduction = 1 - var / var_plain if var_plain > 0 else 0.0
    delta, se = float(delta), math.sqrt(var)
    users = len(ea) + len(eb)
    half = half_width(se, users, alpha, t_star)
    return SequentialDifference(
        delta=delta,
        se=se,
        fixed=(delta - _Z95 * se, delta + _Z95 * se),
        sequence=(delta - half, delta + half),
        users=users,
        cuped=covariate is not None,
        variance_reduction=float(reduction),
    )


def srm_p_value(observed: Mapping[str, int], weights: Mapping[str, float], concentration: float = 100.0) -> float:
    """The always-valid sample-ratio p-value of users per arm against the (normalised) weights.

    >>> srm_p_value({"a": 5_000, "b": 5_000}, {"a": 1, "b": 1})
    1.0
    >>> srm_p_value({"a": 5_300, "b": 4_700}, {"a": 1, "b": 1}) < 0.001
    True
    """
    if any(not w > 0 for w in weights.values()) or set(observed) - set(weights):
        raise ValueError(f"every observed arm needs a weight > 0: {dict(observed)} against {dict(weights)}")
    total = float(sum(weights.values()))
    prior = {arm: concentration * w / total for arm, w in weights.items()}
    n = {arm: int(observed.get(arm, 0)) for arm in weights}
    log_bf = (
        math.lgamma(concentration)
        - math.lgamma(concentration + sum(n.values()))
        + sum(
            math.lgamma(prior[a] + n[a]) - math.lgamma(prior[a]) - n[a] * math.log(prior[a] / concentration) for a in n
        )
    )
    return min(1.0, math.exp(-log_bf))
