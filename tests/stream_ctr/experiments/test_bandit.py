"""Thompson-sampling allocation (stream_ctr.experiments.bandit): the probability that each arm is best against
numerical integration, the floor, stickiness within an epoch and reshuffling across, propensities that match the
share of users each arm gets, and a simulated bandit that moves to the best arm while its log, weighed by the
propensities it carried, still estimates the worst arm's CTR off-policy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from stream_ctr.experiments.assignment import BUCKETS, ExperimentError
from stream_ctr.experiments.bandit import ThompsonAllocation, probability_best
from stream_ctr.experiments.ope import Logged, ips, snips

ARMS = ("global", "ft", "ft_lc")


def allocation(**overrides) -> ThompsonAllocation:
    return ThompsonAllocation(**{"name": "b", "salt": "s", "arms": ARMS, "cadence_s": 60.0, "start_ts": 0.0,
                                 **overrides})  # fmt: skip


def test_probability_best_matches_integration_for_two_arms():
    a, b = stats.beta(1 + 30, 1 + 70), stats.beta(1 + 40, 1 + 60)
    exact, _ = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1)  # P(A > B)
    p = probability_best(np.array([30, 40]), np.array([100, 100]), (1.0, 1.0), 200_000, seed=1)
    assert p[0] == pytest.approx(exact, abs=0.005) and p.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="clicks"):
        probability_best(np.array([5]), np.array([3]), (1, 1), 10, 0)


def test_weights_keep_the_floor_sum_to_one_and_fall_on_buckets():
    alloc = allocation(floor=0.05)
    w = alloc.weights(3, {"global": 10, "ft": 10, "ft_lc": 300}, dict.fromkeys(ARMS, 1000))
    assert w == {"global": 0.05, "ft": 0.05, "ft_lc": 0.9}
    w = alloc.weights(3, {"global": 100, "ft": 104, "ft_lc": 98}, dict.fromkeys(ARMS, 1000))
    assert sum(w.values()) == pytest.approx(1.0) and min(w.values()) >= 0.05
    assert all(abs(x * BUCKETS - round(x * BUCKETS)) < 1e-9 for x in w.values())
    assert alloc.weights(0, {}, {}) == pytest.approx(dict.fromkeys(ARMS, 1 / 3), abs=1e-4)
    # the same counts give the same weights in every process; the epoch seeds the draws
    again = allocation(floor=0.05).weights(3, {"global": 100, "ft": 104, "ft_lc": 98}, dict.fromkeys(ARMS, 1000))
    assert again == w


def test_bad_definitions_are_refused():
    for bad in ({"floor": 0.5}, {"cadence_s": 0.0}, {"arms": ("ft",)}, {"arms": ("ft", "nope")}, {"coverage": 0}):
        with pytest.raises(ExperimentError):
            allocation(**bad)


def test_users_are_sticky_within_an_epoch_and_propensities_match_the_split():
    alloc = allocation(coverage=0.6)
    weights = {"global": 0.2, "ft": 0.3, "ft_lc": 0.5}
    users = [f"u{n}" for n in range(20_000)]
    early, late = alloc.epoch(61.0), alloc.epoch(119.9)
    assert early == late == 1 and alloc.epoch(120.0) == 2 and alloc.epoch(-5.0) == 0
    one, two = alloc.experiment(1, weights), alloc.experiment(2, weights)
    arms_one = [one.assign(u).arm for u in users]
    assert arms_one == [alloc.experiment(late, weights).assign(u).arm for u in users]  # sticky within the epoch
    moved = np.mean([a != two.assign(u).arm for a, u in zip(arms_one, users)])
    assert 0.3 < moved < 0.8  # a new epoch reshuffles
    for arm in ARMS:
        share = arms_one.count(arm) / len(users)
        p = one.propensity(arm)
        assert p == pytest.approx(0.6 * weights[arm] + (0.4 if arm == "global" else 0.0), abs=1e-4)
        assert share == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / len(users)))


def _run_bandit(alloc: ThompsonAllocation, ctr: dict[str, float], epochs: int, per_epoch: int, rng):
    """Requests from random users, served by each epoch's split; weights recomputed from all counts so far."""
    counts = {a: [0, 0] for a in ARMS}
    units: dict[str, list] = {"users": [], "arms": [], "propensities": [], "rewards": []}
    history = []
    for epoch in range(epochs):
        w = alloc.weights(epoch, {a: c[1] for a, c in counts.items()}, {a: c[0] for a, c in counts.items()})
        split = alloc.experiment(epoch, w)
        history.append(w)
        for user in rng.integers(5000, size=per_epoch):
            arm = split.assign(f"u{user}").arm
            clicks = int(rng.binomial(5, ctr[arm]))
            counts[arm][0] += 5
            counts[arm][1] += clicks
            for key, value in zip(units, (f"u{user}", arm, split.propensity(arm), clicks / 5)):
                units[key].append(value)
    return history, Logged.from_units(**units)


def test_a_bandit_moves_to_the_best_arm_and_its_log_still_estimates_the_others():
    ctr = {"global": 0.10, "ft": 0.12, "ft_lc": 0.16}
    history, log = _run_bandit(allocation(floor=0.05), ctr, epochs=8, per_epoch=1500, rng=np.random.default_rng(5))
    assert history[0] == pytest.approx(dict.fromkeys(ARMS, 1 / 3), abs=1e-4)
    assert history[-1]["ft_lc"] >= 0.85 and history[-1]["global"] == 0.05
    assert len(set(log.propensity.round(6).tolist())) > 3  # the propensities changed with the epochs
    for estimate in (ips(log, "global"), snips(log, "global")):
        assert estimate.ci[0] <= ctr["global"] <= estimate.ci[1], estimate
    # the plain mean of the arm's rare late exposures is unbiased here too (the world does not change), but the
    # pooled weights are what make a mix of arms estimable from a log whose split kept moving
    mix = snips(log, {"global": 1, "ft": 1})
    assert mix.ci[0] <= (ctr["global"] + ctr["ft"]) / 2 <= mix.ci[1]
