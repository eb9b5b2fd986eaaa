import numpy as np
import pytest
from reference_metrics import mean_logloss, pairwise_auc

from stream_ctr.quality.metrics import auc, calibration, logloss


@pytest.mark.parametrize("seed", range(5))
def test_auc_with_ties_matches_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.3).astype(int)
    scores = rng.integers(0, 6, size=300) / 5.0  # many ties
    assert auc(y, scores) == pytest.approx(pairwise_auc(y, scores), abs=1e-12)


def test_logloss_and_calibration():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.6, 0.3])
    assert logloss(y, p) == pytest.approx(mean_logloss(y, p), abs=1e-12)
    assert calibration(y, p) == pytest.approx(2.0 / 3.0)
    assert np.isnan(auc(np.ones(3), np.arange(3)))


def test_scores_of_exactly_0_and_1_cost_a_bounded_loss_and_every_logloss_clips_alike():
    from stream_ctr.quality.metrics import PROB_EPS, clip_probs, log_loss_one, log_losses

    y = np.array([1, 0, 0, 1])
    p = np.array([0.0, 1.0, 0.0, 1.0])  # wrong and certain, right and certain
    assert clip_probs(p).tolist() == [PROB_EPS, 1 - PROB_EPS, PROB_EPS, 1 - PROB_EPS]
    losses = log_losses(y, p)
    assert losses[:2] == pytest.approx(-np.log(PROB_EPS), rel=1e-6) and np.all(losses[2:] < 2e-7)
    assert logloss(y, p) == pytest.approx(losses.mean()) and np.isfinite(logloss(y, p))
    assert [log_loss_one(int(a), float(b)) for a, b in zip(y, p)] == pytest.approx(losses.tolist(), rel=1e-12)
    assert np.isnan(logloss(y, np.array([np.nan, 0.5, 0.5, 0.5])))  # a NaN score is not clipped into a number
