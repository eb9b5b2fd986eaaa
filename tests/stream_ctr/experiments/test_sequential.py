"""Always-valid inference and CUPED (stream_ctr.experiments.sequential), and the A/A study built on them.

The oracles: Robbins' normal mixture (the sequence's boundary is where the mixture martingale reaches 1/alpha),
Monte Carlo streams whose true mean is known (the sequence covers it at every time at once, the fixed interval
read as often does not), and the existing delta-method owner (stream_ctr.experiments.stats) for the fixed figure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_ctr.experiments.aa import AAConfig, run_aa
from stream_ctr.experiments.sequential import half_width, rho_squared, sequential_difference
from stream_ctr.experiments.stats import ratio_difference


@pytest.mark.parametrize("t", [10, 1_000, 123_456])
def test_the_boundary_is_where_robbins_normal_mixture_reaches_one_over_alpha(t):
    alpha, t_star = 0.05, 5_000
    rho2 = rho_squared(alpha, t_star)
    s = half_width(se=1 / math.sqrt(t), units=t, alpha=alpha, t_star=t_star) * t  # the sum at the boundary, sigma 1
    mixture = math.exp(rho2 * s * s / (2 * (1 + t * rho2))) / math.sqrt(1 + t * rho2)
    assert mixture == pytest.approx(1 / alpha, rel=1e-9)


def _missed(width_of, streams: int = 400, steps: int = 2_000, seed: int = 0) -> float:
    """Share of i.i.d. N(0.3, 1) streams whose interval excluded 0.3 at some time in ``10..steps``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.0, size=(streams, steps))
    t = np.arange(1, steps + 1)
    mean = x.cumsum(axis=1) / t
    sd = np.sqrt(np.maximum((np.square(x).cumsum(axis=1) - t * mean**2) / np.maximum(t - 1, 1), 1e-12))
    looks = t[::10]
    half = np.array([[width_of(s / math.sqrt(n), n) for n, s in zip(looks, row)] for row in sd[:, ::10]])
    miss = np.abs(mean[:, ::10] - 0.3) > half
    return float(miss[:, 1:].any(axis=1).mean())


def test_the_sequence_covers_the_truth_at_every_time_at_once_and_a_peeked_fixed_interval_does_not():
    sequential = _missed(lambda se, n: half_width(se, n, 0.05, t_star=500))
    fixed = _missed(lambda se, n: 1.959963984540054 * se)
    assert sequential <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400), sequential
    assert fixed > 0.2, fixed  # 200 looks at a 95% interval: far more than 5% of streams leave it once


def test_the_fixed_figure_is_the_delta_method_of_the_stats_module():
    rng = np.random.default_rng(1)
    den = rng.integers(1, 30, size=(2, 500)).astype(float)
    num = rng.binomial(den.astype(int), 0.3).astype(float)
    ours = sequential_difference((num[0], den[0]), (num[1], den[1]))
    theirs = ratio_difference(num[1], den[1], num[0], den[0])  # stats: a - b
    assert ours.delta == pytest.approx(theirs.delta) and ours.se == pytest.approx(theirs.se, rel=1e-6)
    assert ours.sequence[0] < ours.fixed[0] < ours.delta < ours.fixed[1] < ours.sequence[1]
    assert not ours.cuped and ours.variance_reduction == 0.0


def test_cuped_stays_unbiased_and_removes_the_variance_its_covariate_explains():
    rng = np.random.default_rng(2)
    deltas, plain_deltas, reductions = [], [], []
    for _ in range(200):
        prior = rng.beta(2, 5, size=(2, 600))  # each user's click rate, known before the experiment
        den = np.full((2, 600), 20.0)
        num = rng.binomial(20, np.minimum(prior * np.array([[1.0], [1.1]]), 1)).astype(float)  # b: +10%
        cuped = sequential_difference((num[0], den[0]), (num[1], den[1]), covariate=(prior[0], prior[1]))
        plain = sequential_difference((num[0], den[0]), (num[1], den[1]))
        deltas.append(cuped.delta)
        plain_deltas.append(plain.delta)
        reductions.append(cuped.variance_reduction)
    true = 0.1 * 2 / 7  # 10% of the mean prior
    assert np.mean(deltas) == pytest.approx(true, abs=0.002) and np.mean(plain_deltas) == pytest.approx(true, abs=0.003)
    assert np.std(deltas) < 0.8 * np.std(plain_deltas)  # the spread over experiments shrinks, not only the SE
    assert 0.4 < np.median(reductions) < 0.9


def test_an_uninformative_covariate_changes_almost_nothing():
    rng = np.random.default_rng(3)
    den = np.full((2, 2000), 10.0)
    num = rng.binomial(10, 0.3, size=(2, 2000)).astype(float)
    noise = rng.random((2, 2000))
    cuped = sequential_difference((num[0], den[0]), (num[1], den[1]), covariate=(noise[0], noise[1]))
    assert abs(cuped.variance_reduction) < 0.01


def test_the_aa_study_reads_peeking_as_it_is_and_is_deterministic():
    cfg = AAConfig(runs=30, users=800, requests=12_000, peek_every=500, lift=0.3, seed=4)
    out = run_aa(cfg)
    assert out == run_aa(cfg)
    assert out["fpr_sequential"] <= out["fpr_naive_peeking"]
    assert out["fpr_naive_peeking"] > 0  # 24 looks at a fixed interval over 30 A/A runs
    assert out["power_planted"] == 1.0 and out["median_requests_to_detect_cuped"] <= out["median_requests_to_detect"]
    assert 0.5 < out["cuped_variance_reduction"] < 1
    assert out["readings_per_run"] == 24 and out["planted_lift"] == 0.3


def test_a_bad_study_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="peek_every"):
        AAConfig(peek_every=0)


def test_the_sample_ratio_p_value_may_be_read_at_every_user_and_still_finds_a_broken_split():
    from stream_ctr.experiments.sequential import srm_p_value
    from stream_ctr.experiments.stats import srm_test

    rng = np.random.default_rng(5)
    weights = {"a": 1.0, "b": 1.0}
    ever_sequential = ever_chi2 = 0
    for _ in range(200):
        b = np.cumsum(rng.random(3_000) < 0.5)  # a correct 50/50 split, read every 30 users
        reads = [{"a": int(n - k), "b": int(k)} for n, k in zip(range(30, 3_001, 30), b[29::30])]
        ever_sequential += any(srm_p_value(r, weights) < 0.05 for r in reads)
        ever_chi2 += any(srm_test(r, weights, alpha=0.05).alarm for r in reads)
    assert ever_sequential / 200 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200) < ever_chi2 / 200
    broken = {"a": 10_400, "b": 9_600}  # 52/48 where 50/50 was configured
    assert srm_p_value(broken, weights) < 0.001
    assert srm_p_value({"a": 300, "b": 600, "c": 300}, {"a": 1, "b": 2, "c": 1}) == 1.0
    with pytest.raises(ValueError, match="weight"):
        srm_p_value({"a": 1, "z": 1}, weights)
