import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from stream_ctr.quality.metrics import auc, calibration, logloss


@pytest.mark.parametrize("seed", range(5))
def test_auc_with_ties_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.3).astype(int)
    scores = rng.integers(0, 6, size=300) / 5.0  # many ties
    assert auc(y, scores) == pytest.approx(roc_auc_score(y, scores))


def test_logloss_and_calibration():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.6, 0.3])
    assert logloss(y, p) == pytest.approx(log_loss(y, p))
    assert calibration(y, p) == pytest.approx(2.0 / 3.0)
    assert np.isnan(auc(np.ones(3), np.arange(3)))
