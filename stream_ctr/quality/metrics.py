"""Pure metric functions shared by the online recorder, the A/B results, the drift detectors and the offline
evaluator: the one home of probability clipping (:data:`PROB_EPS`) and of logloss.

>>> import numpy as np
>>> y = np.array([0, 1, 0, 1]); p = np.array([0.1, 0.9, 0.2, 0.3])
>>> auc(y, p), round(logloss(y, p), 4)
(1.0, 0.4095)
>>> round(float(log_losses(np.array([1]), np.array([0.0]))[0]), 4), round(log_loss_one(1, 0.0), 4)  # clipped
(16.1181, 16.1181)
>>> gauc(np.array(["a", "a", "b", "b"]), y, p)
1.0
"""

from __future__ import annotations

import math
import zlib

import numpy as np

__all__ = [
    "PROB_EPS",
    "auc",
    "calibration",
    "clip_probs",
    "gauc",
    "log_loss_one",
    "log_losses",
    "logloss",
    "per_user_auc",
    "user_key",
    "weighted_auc",
]

#: Scores are clipped to ``[PROB_EPS, 1 - PROB_EPS]`` before a log: a score of exactly 0 or 1 on the wrong
#: event costs ``-log(1e-7)`` (about 16.1 nats), not infinity.
PROB_EPS = 1e-7


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (what the rank-sum AUC needs)."""
    order = np.argsort(x, kind="mergesort")
    _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = average[inverse]
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get half credit); NaN when one class is missing."""
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_user_auc(
    users: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, auc, impressions)`` for every user having both classes, in user order.

    One vectorised pass, no Python loop over users: rows sorted by (user, score), average ranks of tied scores
    within a user, then each user's rank-sum AUC from per-user sums (:func:`auc`'s formula, per group).
    """
    users = np.asarray(users)
    scores = np.asarray(scores, dtype=float)
    if len(users) == 0:
        return users[:0], np.zeros(0), np.zeros(0)
    order = np.lexsort((scores, users))
    u, s, y = users[order], scores[order], np.asarray(labels)[order] > 0.5
    new_user = np.r_[True, u[1:] != u[:-1]]
    new_tie = new_user | np.r_[True, s[1:] != s[:-1]]
    pos = np.arange(len(u))
    user_start = np.maximum.accumulate(np.where(new_user, pos, 0))
    tie_id = np.cumsum(new_tie) - 1
    tie_lo = pos[new_tie]
    tie_hi = np.r_[tie_lo[1:], len(u)]  # exclusive
    rank = (tie_lo + tie_hi - 1) / 2.0 - user_start[tie_lo] + 1.0  # 1-based average rank within the user
    ranks = rank[tie_id]
    group = np.cumsum(new_user) - 1
    n = np.bincount(group).astype(float)
    n_pos = np.bincount(group, weights=y.astype(float))
    rank_sum = np.bincount(group, weights=np.where(y, ranks, 0.0))
    n_neg = n - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    aucs = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return u[new_user][both], aucs, n[both]


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users having both classes; NaN if there are none."""
    _, aucs, n = per_user_auc(users, labels, scores)
    return weighted_auc(aucs, n)


def weighted_auc(aucs: np.ndarray, weights: np.ndarray) -> float:
    """gAUC from :func:`per_user_auc`'s AUCs and impressions: their weighted mean; NaN when there are none."""
    if len(aucs) == 0:
        return float("nan")
    return float((aucs * weights).sum() / weights.sum())


def clip_probs(probs: np.ndarray) -> np.ndarray:
    """``probs`` as float64, clipped to ``[PROB_EPS, 1 - PROB_EPS]`` (NaN stays NaN)."""
    return np.clip(np.asarray(probs, dtype=float), PROB_EPS, 1 - PROB_EPS)


def log_losses(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each event's logloss ``-(y log p + (1 - y) log(1 - p))``, ``p`` clipped by :func:`clip_probs`."""
    p = clip_probs(probs)
    y = np.asarray(labels, dtype=float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean of :func:`log_losses` (NaN for no events)."""
    return float(log_losses(labels, probs).mean())


def log_loss_one(label: int, score: float) -> float:
    """:func:`log_losses` of one event (label 0/1) in plain Python floats, for a per-event hot path."""
    p = min(max(score, PROB_EPS), 1 - PROB_EPS)
    return -math.log(p) if label else -math.log(1 - p)


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Sum of predictions over sum of clicks (1.0 is calibrated); NaN without clicks."""
    clicks = float(np.sum(labels))
    return float(np.sum(probs) / clicks) if clicks > 0 else float("nan")


def user_key(user_id: str) -> int:
    """A stable integer for a user id: groups rows per user for gAUC with no table of ids (which would grow with
    the users). Two users colliding (CRC32: about 1 in 4 billion pairs) would be scored as one."""
    return zlib.crc32(user_id.encode())
