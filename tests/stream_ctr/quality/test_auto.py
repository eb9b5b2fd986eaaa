"""stream_ctr.quality.auto.choose: switch methods only on paired evidence whose CI excludes 0; and the offline
ft_auto."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ctr.quality.auto import choose


def test_a_clear_gain_switches_to_the_best_significant_challenger():
    rng = np.random.default_rng(0)
    diffs = {
        "lc": rng.normal(0.01, 0.05, 500),
        "lc_bias": rng.normal(0.03, 0.05, 500),
        "lc_evidence": rng.normal(-0.02, 0.05, 500),
    }
    d = choose("none", diffs)
    assert d.method == "lc_bias" and d.switched
    assert d.estimates["lc_bias"][1] > 0 and d.estimates["lc_evidence"][2] < 0
    assert "switch to lc_bias" in d.reason


def test_a_clear_loss_or_no_difference_keeps_the_default():
    rng = np.random.default_rng(1)
    assert choose("lc", {"none": rng.normal(-0.03, 0.05, 500)}).method == "lc"
    assert not choose("none", {"lc": rng.normal(0.0, 0.05, 500)}).switched
    assert choose("none", {}).method == "none"
    assert choose("none", {"lc": np.full(5, 0.5)}).method == "none"  # 5 users: too little evidence to judge


def test_weights_decide_which_users_count():
    gain = np.r_[np.full(50, 0.05), np.full(50, -0.05)]
    heavy_first = np.r_[np.full(50, 100.0), np.ones(50)]
    assert choose("none", {"lc": gain}, {"lc": heavy_first}).method == "lc"
    assert choose("none", {"lc": gain}, {"lc": heavy_first[::-1]}).method == "none"


def test_false_switches_stay_rare_with_several_null_challengers():
    """Three challengers no better than the default: the Bonferroni-adjusted CIs keep the share of worlds in which
    auto switches near or below 5%, where unadjusted CIs would switch in about 3 x 2.5%."""
    rng = np.random.default_rng(2)
    switched = sum(
        choose("none", {m: rng.normal(0, 0.05, 200) for m in ("a", "b", "c")}, n_boot=300, seed=k).switched
        for k in range(100)
    )
    assert switched <= 6


@pytest.mark.parametrize("gain, expect", [(0.02, "ft_lc_bias"), (-0.02, "ft"), (0.0, "ft")])
def test_offline_ft_auto_picks_from_validation_results(gain, expect):
    from stream_ctr.evaluate.experiment import pick_auto
    from stream_ctr.evaluate.tuning import Choice

    rng = np.random.default_rng(3)
    users, n = np.arange(300), rng.integers(3, 10, 300).astype(float)
    ft_auc = rng.uniform(0.4, 0.9, 300)
    choices = {
        "ft": Choice(0.1, 0.01, 5, 0.0, users, ft_auc, n),
        "ft_lc_bias": Choice(0.1, 0.01, 5, 0.0, users[1:], ft_auc[1:] + gain + rng.normal(0, 0.02, 299), n[1:]),
        "ft_reweight": Choice(0.1, 0.01, 5, 0.0, users, ft_auc + 0.1, n),
    }  # not a correction variant
    assert pick_auto(choices) == expect
