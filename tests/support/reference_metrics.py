"""Reference metrics by their definitions, slow and obvious, for checking the fast ones in
:mod:`stream_ctr.quality.metrics`."""

from __future__ import annotations

import numpy as np


def pairwise_auc(labels, scores) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked right, a tie counting half."""
    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=float)
    pos, neg = s[y][:, None], s[~y][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def mean_logloss(labels, probs) -> float:
    """Mean negative log-likelihood of the labels under the predicted click probabilities."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
