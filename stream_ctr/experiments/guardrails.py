"""Guardrails: metrics a treatment arm must not harm, each with a tolerance, tested with an always-valid interval.

An experiment may declare, in its definition file (key ``guardrails``)::

    "guardrails": {"tolerances": {"ctr": 0.02, "logloss": 0.05}, "alpha": 0.05, "min_users": 200}

- ``tolerances``: per metric, how much worse than the control an arm may be, in the metric's own units (absolute
  differences): ``ctr`` may fall at most 0.02 below the control's CTR; ``logloss`` may rise at most 0.05 above
  the control's. The metrics are the per-user-randomised ratios the worker keeps per arm
  (:class:`~stream_ctr.experiments.attribution.ArmResults`): clicks / impressions and logloss / impressions of the
  served scores. Scoring latency and errors are not per arm (requests of every arm are ranked in one forward
  pass), so they cannot be guardrails.
- ``alpha`` (default 0.05): the chance, on one worker, that any guardrail ever stops an arm whose true difference is
  within its tolerance, however long the experiment runs and however often it is checked. Each of the ``m``
  comparisons (guardrails x treatment arms) is tested at ``alpha / m`` (Bonferroni) with the confidence sequence
  of :mod:`.sequential`.
- ``min_users`` (default 200): no decision before both arms have this many users with an impression (the
  sequence is asymptotic: its coverage is only nominal once there are enough units).

A guardrail is *breached* when its interval lies entirely on the harmful side of the tolerance: for ``ctr`` the
upper bound of ``arm - control`` is below ``-tolerance``, for ``logloss`` the lower bound is above ``+tolerance``.

>>> g = Guardrails.from_dict({"tolerances": {"ctr": 0.02}})
>>> g.tolerances, g.alpha, g.min_users
((('ctr', 0.02),), 0.05, 200)
>>> Guardrails.from_dict({"tolerances": {"latency": 1}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream_ctr.experiments.guardrails.GuardrailError: guardrails.tolerances.latency: unknown metric (expected [...])
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from stream_ctr.experiments.sequential import SequentialDifference, half_width

__all__ = ["HARM", "Breach", "GuardrailError", "Guardrails", "breaches", "guardrail_interval"]

#: Metric -> the sign of a harmful difference (arm - control): a CTR that falls, a logloss that rises.
HARM: dict[str, int] = {"ctr": -1, "logloss": +1}

#: Guardrail states (the ``stream_ctr_ab_guardrail_state`` gauge): too few users yet, holding, breached.
WAITING, HOLDING, BREACHED = -1, 0, 1


class GuardrailError(ValueError):
    """A malformed guardrails block; the message starts with the offending key."""


def _number(value: Any, key: str, ok, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise GuardrailError(f"{key}: must be {what}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Guardrails:
    """Tolerances per metric (``(metric, tolerance)`` pairs, in the order given), the family-wise ``alpha`` and
    the users both arms need before a decision."""

    tolerances: tuple[tuple[str, float], ...]
    alpha: float = 0.05
    min_users: int = 200

    @classmethod
    def from_dict(cls, d: Any, key: str = "guardrails") -> Guardrails:
        if not isinstance(d, Mapping):
            raise GuardrailError(f"{key}: expected an object, got {type(d).__name__}")
        for name in d:
            if name not in ("tolerances", "alpha", "min_users"):
                raise GuardrailError(f"{key}.{name}: unknown key (expected ['alpha', 'min_users', 'tolerances'])")
        tol = d.get("tolerances")
        if not isinstance(tol, Mapping) or not tol:
            raise GuardrailError(f"{key}.tolerances: must map at least one metric of {sorted(HARM)} to a tolerance")
        pairs = []
        for metric, value in tol.items():
            if metric not in HARM:
                raise GuardrailError(f"{key}.tolerances.{metric}: unknown metric (expected {sorted(HARM)})")
            pairs.append((metric, _number(value, f"{key}.tolerances.{metric}", lambda v: v >= 0, "a number >= 0")))
        alpha = _number(d.get("alpha", 0.05), f"{key}.alpha", lambda v: 0 < v < 1, "a number in (0, 1)")
        users = d.get("min_users", 200)
        if isinstance(users, bool) or not isinstance(users, int) or users < 2:
            raise GuardrailError(f"{key}.min_users: must be an integer >= 2, got {users!r}")
        return cls(tuple(pairs), alpha, users)

    def to_dict(self) -> dict[str, Any]:
        return {"tolerances": dict(self.tolerances), "alpha": self.alpha, "min_users": self.min_users}

    def comparison_alpha(self, treatment_arms: int) -> float:
        """The level of each comparison: ``alpha`` shared over guardrails x treatment arms."""
        return self.alpha / (len(self.tolerances) * max(treatment_arms, 1))


def guardrail_interval(
    diff: SequentialDifference, alpha: float, t_star: float, users: tuple[int, int]
) -> tuple[float, float]:
    """The always-valid interval of ``diff`` at level ``alpha`` (its standard error and users are reused).

    >>> d = SequentialDifference(-0.05, 0.01, (-0.0696, -0.0304), (-0.08, -0.02), 4000, False, 0.0)
    >>> lo, hi = guardrail_interval(d, 0.0125, 1000, (2000, 2000))
    >>> lo < -0.08 and -0.02 < hi < 0
    True
    """
    half = half_width(diff.se, sum(users), alpha, t_star)
    return diff.delta - half, diff.delta + half


@dataclass(frozen=True)
class Breach:
    """A significant breach: ``arm``'s ``metric`` differs from the control's by ``delta`` (interval
    ``interval``) beyond ``tolerance`` on the harmful side."""

    arm: str
    metric: str
    delta: float
    interval: tuple[float, float]
    tolerance: float

    @property
    def reason(self) -> str:
        side = "below" if HARM[self.metric] < 0 else "above"
        lo, hi = self.interval
        return (
            f"guardrail {self.metric}: {self.arm} - control = {self.delta:+.4f}, always-valid interval "
            f"[{lo:+.4f}, {hi:+.4f}] lies beyond the tolerance ({self.tolerance:g} {side} the control)"
        )


def breached(metric: str, interval: tuple[float, float], tolerance: float) -> bool:
    """Whether ``interval`` (of arm - control) lies entirely beyond ``tolerance`` on ``metric``'s harmful side.

    >>> breached("ctr", (-0.05, -0.021), 0.02), breached("ctr", (-0.05, -0.019), 0.02)
    (True, False)
    >>> breached("logloss", (0.051, 0.2), 0.05), breached("logloss", (-0.2, -0.1), 0.0)
    (True, False)
    """
    lo, hi = interval
    return hi < -tolerance if HARM[metric] < 0 else lo > tolerance


def breaches(
    guardrails: Guardrails,
    intervals: Mapping[str, Mapping[str, tuple[float, float] | None]],
    stopped: Collection[str] = (),
) -> list[Breach]:
    """The significant breaches among ``intervals`` (treatment arm -> metric -> the guardrail-level interval, None
    while too few users), arms already ``stopped`` left out."""
    out = []
    for arm, metrics in intervals.items():
        if arm in stopped:
            continue
        for metric, tolerance in guardrails.tolerances:
            interval = metrics.get(metric)
            if interval is not None and breached(metric, interval, tolerance):
                out.append(Breach(arm, metric, (interval[0] + interval[1]) / 2, interval, tolerance))
                break  # one breach stops the arm
    return out
