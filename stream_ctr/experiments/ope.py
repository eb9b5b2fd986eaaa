"""Off-policy evaluation: the CTR a policy *would* have had, estimated from exposures logged under another one.

A logged unit is one exposure (one scoring request): the arm ``a_i`` it served, that arm's logging propensity
``p_i`` (the probability that the assignment gave the user that arm, coverage included:
:meth:`~stream_ctr.experiments.assignment.Experiment.propensity`, carried by every record of ``ctr.exposures``),
its reward ``r_i`` (clicks over attributed impressions: the request's CTR) and its user. A target policy ``pi`` is
a distribution over arms, the same for every request; "serve ``ft_lc`` to everyone" puts all its mass on one arm.
The value of ``pi`` is the mean reward per request had every request been served by it. With importance weights
``w_i = pi(a_i) / p_i``:

- **IPS** (inverse propensity scoring, Horvitz-Thompson): ``V = sum_i w_i r_i / n``. Unbiased when every logged
  propensity is the true one and positive wherever ``pi`` has mass; its variance grows with the weights, so an arm
  served rarely is estimated noisily.
- **SNIPS** (self-normalised IPS; Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual
  Learning", NeurIPS 2015): ``V = sum_i w_i r_i / sum_i w_i``. A ratio, so biased at O(1/n) but consistent;
  usually of lower variance, and unmoved when every propensity is off by the same factor (IPS is not).
- **DR** (doubly robust; Dudik, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011): with a
  reward model ``q(i, a)`` predicting unit ``i``'s reward under each arm,
  ``V = sum_i [ sum_a pi(a) q(i, a) + w_i (r_i - q(i, a_i)) ] / n``. Unbiased when the propensities are right *or*
  the model is; its variance is that of the model's residuals, so a model that explains the users' differences in
  click rate narrows the interval. The model must not have seen the unit's own user (the user is the
  randomisation unit): :func:`reward_model` fits it on the other users (cross-fitting).

**Variance clustered by user.** Users, not requests, are randomised (the assignment hashes the user id, so all of
a user's requests in an epoch share an arm), and a user's requests share their click habit. Each estimator above
is a ratio of sums over units, ``sum_i num_i / sum_i den_i`` (``den_i = 1`` for IPS and DR, ``w_i`` for SNIPS);
summing ``num`` and ``den`` per user first and taking the delta method over users
(:func:`stream_ctr.experiments.stats.ratio_estimate`, as the A/B report does for CTR) gives a standard error that
counts each user once. The 95% intervals are normal (CLT) intervals; for SNIPS, and for IPS and DR with a random
number of requests per user, they are delta-method intervals. The model's own estimation error is left out of the
DR interval (first-order negligible with cross-fitting).

The effective sample size of the weights (Kish) says how many equally weighted units the estimate is worth:
``(sum w)^2 / sum w^2``.

>>> log = Logged.from_units(users=["a", "a", "b", "c"], arms=["ft", "ft", "global", "ft_lc"],
...                         propensities=[0.4, 0.4, 0.3, 0.3], rewards=[0.2, 0.4, 0.0, 1.0])
>>> [round(e.value, 6) for e in (ips(log, "ft"), snips(log, "ft"))]  # 2.5 * 0.6 / 4 units, and / (2.5 + 2.5)
[0.375, 0.3]
>>> ips(log, "ft").matched, ips(log, "ft").ess
(2, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stream_ctr.experiments.stats import ratio_estimate

__all__ = [
    "Estimate",
    "Logged",
    "doubly_robust",
    "effective_sample_size",
    "evaluate",
    "ips",
    "on_policy",
    "policy_vector",
    "render_markdown",
    "report",
    "reward_model",
    "snips",
]

#: A target policy: one arm served to everyone, or a distribution over arms (normalised by its sum).
Policy = str | Mapping[str, float]


@dataclass(frozen=True)
class Logged:
    """Logged units, as arrays of one length: ``arm`` indexes ``arms``, ``user`` indexes the distinct users
    (``0 .. users - 1``); ``covariate`` (optional) is a pre-experiment value of the unit's user, e.g. their click
    rate before their first exposure, for :func:`reward_model`."""

    arms: tuple[str, ...]
    arm: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    user: np.ndarray
    covariate: np.ndarray | None = None

    @classmethod
    def from_units(
        cls,
        users: Sequence[str],
        arms: Sequence[str],
        propensities: Sequence[float],
        rewards: Sequence[float],
        covariate: Sequence[float] | None = None,
    ) -> Logged:
        """Build from one entry per unit; propensities must lie in (0, 1] and rewards be finite."""
        n = len(users)
        if not n or any(len(x) != n for x in (arms, propensities, rewards, users if covariate is None else covariate)):
            raise ValueError("need at least one unit, and one user, arm, propensity and reward (and covariate) each")
        names, arm = np.unique(np.asarray(arms, dtype=str), return_inverse=True)
        _, user = np.unique(np.asarray(users, dtype=str), return_inverse=True)
        p = np.asarray(propensities, dtype=float)
        if not ((p > 0) & (p <= 1)).all():
            raise ValueError(f"propensities must lie in (0, 1], got {p[~((p > 0) & (p <= 1))][:3].tolist()}")
        r = np.asarray(rewards, dtype=float)
        if not np.isfinite(r).all():
            raise ValueError("rewards must be finite")
        x = None if covariate is None else np.asarray(covariate, dtype=float)
        return cls(tuple(str(a) for a in names), arm, p, r, user, x)

    @property
    def units(self) -> int:
        return len(self.arm)

    @property
    def users(self) -> int:
        return int(self.user.max()) + 1


@dataclass(frozen=True)
class Estimate:
    """One estimator's value of the target policy, its standard error (clustered by user), 95% CI, the effective
    sample size of its weights, the units whose logged arm the policy may serve (``matched``), all units and
    users."""

    estimator: str
    value: float
    se: float
    ci: tuple[float, float]
    ess: float
    matched: int
    units: int
    users: int

    def to_dict(self) -> dict:
        return {**self.__dict__, "ci": list(self.ci)}


def policy_vector(policy: Policy, arms: Sequence[str]) -> np.ndarray:
    """``pi(a)`` for each of ``arms``. An arm the policy serves must be among them: no logged unit can stand for an
    arm that was never served.

    >>> policy_vector({"ft": 3, "global": 1}, ("ft", "ft_lc", "global")).tolist()
    [0.75, 0.0, 0.25]
    >>> policy_vector("other", ("ft",))
    Traceback (most recent call last):
    ...
    ValueError: the policy serves arms never logged: ['other']
    """
    mass = {policy: 1.0} if isinstance(policy, str) else dict(policy)
    bad = {a: m for a, m in mass.items() if not (math.isfinite(m) and m >= 0)}
    if bad or not sum(mass.values()) > 0:
        raise ValueError(f"policy weights must be finite, >= 0 and not all 0, got {mass}")
    unknown = sorted(a for a, m in mass.items() if m > 0 and a not in arms)
    if unknown:
        raise ValueError(f"the policy serves arms never logged: {unknown}")
    total = sum(mass.values())
    return np.array([mass.get(a, 0.0) / total for a in arms])


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ``(sum w)^2 / sum w^2``; 0 when every weight is 0.

    >>> effective_sample_size(np.array([1.0, 1.0, 0.0])), round(effective_sample_size(np.array([4.0, 0, 0, 1])), 3)
    (2.0, 1.471)
    """
    sq = float(weights @ weights)
    return float(weights.sum()) ** 2 / sq if sq > 0 else 0.0


def _weights(log: Logged, policy: Policy) -> np.ndarray:
    return policy_vector(policy, log.arms)[log.arm] / log.propensity


def _clustered(name: str, num: np.ndarray, den: np.ndarray, log: Logged, w: np.ndarray) -> Estimate:
    """``sum(num) / sum(den)`` with its delta-method SE over users (per-user sums)."""
    by_user = [np.bincount(log.user, weights=x, minlength=log.users) for x in (num, den)]
    r = ratio_estimate(*by_user)
    return Estimate(name, r.value, r.se, r.ci, effective_sample_size(w), int((w > 0).sum()), log.units, log.users)


def ips(log: Logged, policy: Policy) -> Estimate:
    """Inverse propensity scoring: ``sum w_i r_i / n``."""
    w = _weights(log, policy)
    return _clustered("IPS", w * log.reward, np.ones(log.units), log, w)


def snips(log: Logged, policy: Policy) -> Estimate:
    """Self-normalised IPS: ``sum w_i r_i / sum w_i``."""
    w = _weights(log, policy)
    return _clustered("SNIPS", w * log.reward, w, log, w)


def doubly_robust(log: Logged, policy: Policy, model: np.ndarray) -> Estimate:
    """Doubly robust with ``model[i, a]``, unit ``i``'s predicted reward under arm ``log.arms[a]``."""
    if model.shape != (log.units, len(log.arms)):
        raise ValueError(f"model must be units x arms = {(log.units, len(log.arms))}, got {model.shape}")
    w = _weights(log, policy)
    direct = model @ policy_vector(policy, log.arms)
    correction = w * (log.reward - model[np.arange(log.units), log.arm])
    return _clustered("DR", direct + correction, np.ones(log.units), log, w)


def on_policy(log: Logged, arm: str) -> Estimate:
    """The plain mean reward of the units that ``arm`` served, clustered by user: what an A/B report reads."""
    served = log.arm == log.arms.index(arm) if arm in log.arms else np.zeros(log.units, bool)
    w = served.astype(float)
    r = _clustered("on-policy", w * log.reward, w, log, w)
    users = len(np.unique(log.user[served]))
    return Estimate(r.estimator, r.value, r.se, r.ci, r.ess, r.matched, r.matched, users)


def _fold_fit(x: np.ndarray | None, r: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of ``r ~ 1 + x`` by least squares (slope 0 without a usable covariate)."""
    if x is None or len(r) < 3 or float(np.var(x)) == 0.0:
        return float(r.mean()), 0.0
    slope = float(np.cov(x, r, bias=True)[0, 1] / np.var(x))
    return float(r.mean() - slope * x.mean()), slope


def reward_model(log: Logged, folds: int = 2, seed: int = 0) -> np.ndarray:
    """A per-arm linear model of the reward on the user's covariate (a per-arm mean without one), cross-fitted:
    users are split into ``folds`` at random and each unit is predicted by the model fit on the other folds'
    users, so no user's rewards predict their own. An arm with no unit in the other folds gets their mean reward.

    >>> users = [f"u{n}" for n in range(8)]
    >>> log = Logged.from_units(users, ["ft", "global"] * 4, [0.5] * 8, [1, 0] * 4, covariate=[0.1] * 8)
    >>> reward_model(log).round(6).tolist()[:2]
    [[1.0, 0.0], [1.0, 0.0]]
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    fold = (np.random.default_rng(seed).permutation(log.users) % folds)[log.user]
    out = np.empty((log.units, len(log.arms)))
    for k in range(folds):
        test, train = fold == k, fold != k
        if not train.any():
            out[test] = float(log.reward.mean())
            continue
        for a in range(len(log.arms)):
            fit = train & (log.arm == a)
            if not fit.any():
                out[test, a] = float(log.reward[train].mean())
                continue
            x = None if log.covariate is None else log.covariate[fit]
            intercept, slope = _fold_fit(x, log.reward[fit])
            out[test, a] = intercept + (0.0 if log.covariate is None else slope * log.covariate[test])
    return out


def evaluate(log: Logged, policy: Policy, model: np.ndarray | None = None) -> list[Estimate]:
    """IPS, SNIPS and DR of ``policy`` (DR with :func:`reward_model` unless a ``model`` is given)."""
    model = reward_model(log) if model is None else model
    return [ips(log, policy), snips(log, policy), doubly_robust(log, policy, model)]


def report(log: Logged, policy: Policy, model: np.ndarray | None = None) -> dict:
    """What ``ab ope`` prints: the policy, the three estimates, the arm's on-policy estimate when the policy is
    one arm (the units it actually served), and the share of units each arm served."""
    pi = policy_vector(policy, log.arms)
    served = [a for a, mass in zip(log.arms, pi) if mass > 0]
    return {
        "policy": {a: float(m) for a, m in zip(log.arms, pi) if m > 0},
        "estimates": evaluate(log, policy, model),
        "on_policy": on_policy(log, served[0]) if len(served) == 1 else None,
        "served_share": {a: float(np.mean(log.arm == i)) for i, a in enumerate(log.arms)},
        "units": log.units,
        "users": log.users,
    }


def _row(e: Estimate, truth: float | None) -> str:
    cells = [e.estimator, f"{e.value:.4f}", f"[{e.ci[0]:.4f}, {e.ci[1]:.4f}]", f"{e.se:.4f}", f"{e.ess:.0f}"]
    cells += [str(e.matched), str(e.units), str(e.users)]
    if truth is not None:
        cells.append("yes" if e.ci[0] <= truth <= e.ci[1] else "**no**")
    return "| " + " | ".join(cells) + " |"


def render_markdown(result: dict, title: str = "Off-policy estimate") -> str:
    """The table of :func:`report` (with a ``truth`` key, as the simulation adds, a column says whether each CI
    holds it).

    >>> log = Logged.from_units(["a", "b", "c", "d"], ["ft", "global", "ft", "global"], [0.5] * 4, [1, 0, 0.5, 0])
    >>> print(render_markdown(report(log, "ft")).splitlines()[4])
    | IPS | 0.7500 | [-0.1883, 1.6883] | 0.4787 | 2 | 2 | 4 | 4 |
    """
    truth = result.get("truth")
    policy = ", ".join(f"{a} {m:.0%}" for a, m in result["policy"].items())
    header = "| estimator | CTR | 95% CI | SE | ESS | matched units | units | users |"
    rule = "|---|---:|---|---:|---:|---:|---:|---:|"
    if truth is not None:
        header, rule = header + " CI holds the truth |", rule + "---|"
    lines = [f"## {title}: {policy}", "", header, rule]
    rows = [*result["estimates"], *(e for e in (result.get("on_policy"), result.get("wrong_propensity_ips")) if e)]
    lines += [_row(e, truth) for e in rows]
    shares = ", ".join(f"{a} {s:.1%}" for a, s in result["served_share"].items())
    lines += ["", f"Units (exposures with an attributed impression) served per arm: {shares}."]
    if result.get("logging"):
        lines.append(f"Logging policy, equal shares of the requests in turn: {'; '.join(result['logging'])}.")
    if truth is not None:
        se = result["truth_se"]
        lines.append(f"True CTR of the policy (on-policy simulation): {truth:.4f} (Monte Carlo SE {se:.4f}).")
    lines.append(
        "CTR: mean clicks / impressions per request. CIs: normal, delta method over users (the randomisation unit). "
        "ESS: effective sample size of the importance weights. on-policy: the units that served the arm, unweighted."
    )
    return "\n".join(lines) + "\n"
