"""Delta-method ratios and the sample-ratio check, against hand computations and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_ctr.experiments.stats import SRM_ALPHA, ratio_difference, ratio_estimate, srm_test


def test_srm_fires_on_52_48_at_100k():
    s = srm_test({"a": 52_000, "b": 48_000}, {"a": 0.5, "b": 0.5})
    assert s.chi2 == pytest.approx(2 * 2000**2 / 50_000)
    assert s.alarm and s.p_value < 1e-30
    assert s.expected == {"a": 50_000.0, "b": 50_000.0}


def test_srm_quiet_on_exact_and_sampled_50_50():
    assert not srm_test({"a": 50_000, "b": 50_000}, {"a": 1, "b": 1}).alarm
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = int(rng.binomial(100_000, 0.5))
        assert not srm_test({"a": a, "b": 100_000 - a}, {"a": 1, "b": 1}).alarm


def test_srm_uses_normalised_weights_and_k_minus_1_degrees_of_freedom():
    weights = {"global": 2.0, "ft": 1.0, "ft_lc": 1.0}
    counts = np.random.default_rng(1).multinomial(40_000, [0.5, 0.25, 0.25])
    s = srm_test(dict(zip(weights, map(int, counts))), weights)
    assert s.expected == {"global": 20_000.0, "ft": 10_000.0, "ft_lc": 10_000.0}
    assert not s.alarm
    # Three arms: 2 degrees of freedom, whose chi-square tail is exp(-chi2 / 2).
    s = srm_test({"global": 20_000, "ft": 10_245, "ft_lc": 9_755}, weights)
    assert s.p_value == pytest.approx(math.exp(-s.chi2 / 2))


def test_srm_edge_cases():
    assert srm_test({}, {"a": 1, "b": 1}).p_value == 1.0
    assert srm_test({"a": 100}, {"a": 1, "b": 1}).alarm  # an arm with weight and no users counts 0
    with pytest.raises(ValueError, match="without a weight"):
        srm_test({"c": 1}, {"a": 1})
    assert SRM_ALPHA == 0.001


def test_ratio_matches_hand_computation():
    num, den = np.array([1.0, 0.0, 2.0, 3.0]), np.array([2.0, 1.0, 3.0, 4.0])
    r = ratio_estimate(num, den)
    n, mn, md = 4, num.mean(), den.mean()
    cov = np.cov(num, den)  # ddof = 1
    var = (cov[0, 0] / md**2 - 2 * mn * cov[0, 1] / md**3 + mn**2 * cov[1, 1] / md**4) / n
    assert r.value == pytest.approx(6 / 10)
    assert r.se == pytest.approx(math.sqrt(var))
    assert r.ci == pytest.approx((0.6 - 1.959964 * r.se, 0.6 + 1.959964 * r.se))
    assert r.users == 4


def test_difference_matches_hand_computation():
    a = ratio_estimate(np.array([1, 0, 2]), np.array([2, 1, 3]))
    b = ratio_estimate(np.array([1.0, 0.0, 2.0, 3.0]), np.array([2.0, 1.0, 3.0, 4.0]))
    d = ratio_difference(np.array([1, 0, 2]), np.array([2, 1, 3]), np.array([1, 0, 2, 3]), np.array([2, 1, 3, 4]))
    assert d.delta == pytest.approx(0.5 - 0.6)
    assert d.se == pytest.approx(math.sqrt(a.se**2 + b.se**2))
    assert d.lift == pytest.approx(0.5 / 0.6 - 1)
    assert d.lift_se == pytest.approx(math.sqrt(a.se**2 / 0.6**2 + 0.5**2 * b.se**2 / 0.6**4))
    assert (d.a, d.b) == (a, b)


def _users(rng, n, ctr=0.1):
    """Per-user impressions (heavy-tailed) and clicks from a per-user Beta CTR with mean ``ctr``."""
    impressions = 1 + rng.poisson(rng.lognormal(1.5, 1.0, n))
    p = rng.beta(2 * ctr / (1 - ctr), 2, n)  # Beta(a, 2) with mean a / (a + 2) = ctr
    return rng.binomial(impressions, p), impressions


def test_delta_method_ci_covers_the_true_ctr_about_95_percent():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        clicks, impressions = _users(rng, 1000)
        lo, hi = ratio_estimate(clicks, impressions).ci
        covered += lo <= 0.1 <= hi
    assert 0.90 <= covered / 400 <= 0.99


def test_difference_of_identical_arms_contains_zero():
    clicks, impressions = _users(np.random.default_rng(3), 1000)
    d = ratio_difference(clicks, impressions, clicks, impressions)
    assert d.delta == 0 and d.lift == 0
    assert d.ci[0] < 0 < d.ci[1] and d.lift_ci[0] < 0 < d.lift_ci[1]


def test_a_a_difference_excludes_zero_about_5_percent_of_the_time():
    rng = np.random.default_rng(0)
    rejected = rejected_lift = 0
    for _ in range(400):
        (a_num, a_den), (b_num, b_den) = _users(rng, 1000), _users(rng, 1000)
        d = ratio_difference(a_num, a_den, b_num, b_den)
        rejected += not d.ci[0] < 0 < d.ci[1]
        rejected_lift += not d.lift_ci[0] < 0 < d.lift_ci[1]
    assert 0.01 <= rejected / 400 <= 0.10
    assert 0.01 <= rejected_lift / 400 <= 0.10


def test_undefined_ratios_are_nan():
    assert math.isnan(ratio_estimate(np.array([0.0]), np.array([0.0])).value)
    one = ratio_estimate(np.array([1.0]), np.array([4.0]))
    assert one.value == 0.25 and math.isnan(one.se)
    with pytest.raises(ValueError, match="one length"):
        ratio_estimate(np.array([1.0, 2.0]), np.array([1.0]))
