"""Online metrics per arm over a sliding window and over the whole run (lifetime), at a cost that does not grow
with the users or the length of the run.

The window keeps the last ``window`` predictions in a ring (:class:`~stream_ctr.quality.rows.ScoreRows`: the
oldest drop out) and recomputes its metrics from them. The lifetime scope is running state:

- pooled AUC, logloss and calibration over *every* prediction, from per-arm counts of positives and negatives in
  :data:`SCORE_BINS` score bins and running sums (:class:`_Pooled`: O(batch) to add, O(bins) to read; two scores
  in the same 1/10,000-wide bin count as a tie);
- gAUC over every prediction of a *sample of users* chosen by a hash of the user id (:class:`_UserSample`):
  each sampled user's AUC is exact, and the sample shrinks by half whenever it would exceed ``lifetime_users``
  users or ``lifetime_rows`` rows, so a refresh reads at most ``lifetime_rows`` rows however many users came.
  ``lifetime_user_share`` says which share of the users it holds (1.0 until the first halving).

Values are the pure functions of :mod:`stream_ctr.quality.metrics`.
"""

from __future__ import annotations

import threading

import numpy as np

from stream_ctr.contracts.arms import PAIRS
from stream_ctr.quality.bootstrap import UserBootstrap
from stream_ctr.quality.metrics import auc, calibration, log_losses, logloss, per_user_auc, user_key, weighted_auc
from stream_ctr.quality.rows import ScoreRows

__all__ = ["SCORE_BINS", "OnlineMetrics"]

#: Score bins of the running pooled AUC.
SCORE_BINS = 10_000


class _Pooled:
    """Running pooled metrics of one arm over every prediction: per-class counts of scores in bins, logloss and
    calibration sums."""

    def __init__(self):
        self.pos = np.zeros(SCORE_BINS, dtype=np.int64)
        self.neg = np.zeros(SCORE_BINS, dtype=np.int64)
        self.loss = self.score_sum = 0.0

    def add(self, labels: np.ndarray, probs: np.ndarray) -> None:
        y = labels > 0.5
        bins = np.clip((probs * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
        self.pos += np.bincount(bins[y], minlength=SCORE_BINS)
        self.neg += np.bincount(bins[~y], minlength=SCORE_BINS)
        self.loss += float(log_losses(labels, probs).sum())
        self.score_sum += float(probs.sum())

    def summary(self) -> dict:
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        below = np.cumsum(self.neg) - self.neg  # negatives in lower bins
        auc = float((self.pos * (below + 0.5 * self.neg)).sum() / (n_pos * n_neg)) if n_pos and n_neg else float("nan")
        n = n_pos + n_neg
        return {
            "auc": auc,
            "logloss": self.loss / n if n else float("nan"),
            "calibration": self.score_sum / n_pos if n_pos else float("nan"),
        }


class _UserSample:
    """Every prediction of the users whose key has its low ``level`` bits zero (a hash-chosen share of
    ``2**-level`` of all users, the same users on every worker and run)."""

    def __init__(self, arms, max_users: int, max_rows: int):
        self.max_users = max_users
        self.rows = ScoreRows(arms, max_rows, ring=False)
        self.users: set[int] = set()
        self.level = 0

    def add(self, users: np.ndarray, labels: np.ndarray, preds: dict[str, np.ndarray]) -> None:
        keep = (users & ((1 << self.level) - 1)) == 0
        users, labels, preds = users[keep], labels[keep], {a: p[keep] for a, p in preds.items()}
        self.users.update(users.tolist())
        while len(self.users) > self.max_users or self.rows.size + len(users) > self.rows.capacity:
            self.level += 1  # half the sampled users leave, with their rows
            mask = (1 << self.level) - 1
            self.users = {u for u in self.users if u & mask == 0}
            self.rows.keep((self.rows.view()[0] & mask) == 0)
            keep = (users & mask) == 0
            users, labels, preds = users[keep], labels[keep], {a: p[keep] for a, p in preds.items()}
        self.rows.add(users, labels, preds)

    @property
    def share(self) -> float:
        return 2.0**-self.level


class OnlineMetrics:
    def __init__(self, arms, window: int = 20000, lifetime_users: int = 50_000, lifetime_rows: int = 1_000_000):
        self.arms = tuple(arms)
        self._lock = threading.Lock()
        self._window = ScoreRows(self.arms, window, ring=True)
        self._sample = _UserSample(self.arms, lifetime_users, lifetime_rows)
        self._pooled = {arm: _Pooled() for arm in self.arms}
        self._n = 0

    def record(self, users, labels: np.ndarray, preds: dict[str, np.ndarray]) -> None:
        uid = np.fromiter((user_key(u) for u in users), dtype=np.int64, count=len(users))
        with self._lock:
            self._window.add(uid, labels, preds)
            self._sample.add(uid, labels, preds)
            for arm, p in preds.items():
                self._pooled[arm].add(labels, p)
            self._n += len(labels)

    def forget(self, user_id: str) -> int:
        """Drop the user's predictions from the window and the lifetime sample (an erasure; the pooled running
        sums hold no user); returns how many rows went."""
        key = user_key(user_id)
        with self._lock:
            self._sample.users.discard(key)
            return self._window.forget(key) + self._sample.rows.forget(key)

    def summary(self, scope: str = "window", paired: bool = False) -> dict:
        """``{"n": predictions, "arms": {arm: {gauc, auc, logloss, calibration}}}`` for ``scope``, and with
        ``paired`` the bootstrap CIs of the gAUC differences between arms (a 500 x users matrix: asked for by a
        report, not computed on every refresh)."""
        with self._lock:
            buffer = self._window if scope == "window" else self._sample.rows
            users, labels, preds = buffer.view()
            users, labels, preds = users.copy(), labels.copy(), {k: v.copy() for k, v in preds.items()}
            pooled = {arm: m.summary() for arm, m in self._pooled.items()} if scope == "lifetime" else None
            n, share = (len(labels), 1.0) if scope == "window" else (self._n, self._sample.share)
        arms, per_user = {}, {}
        for arm, p in preds.items():
            _, per_user[arm], weights = per_user_auc(users, labels, p)
            arms[arm] = {
                "gauc": weighted_auc(per_user[arm], weights),
                **(
                    pooled[arm]
                    if pooled
                    else {
                        "auc": auc(labels, p),
                        "logloss": logloss(labels, p) if len(p) else float("nan"),
                        "calibration": calibration(labels, p),
                    }
                ),
            }
        out = {"n": int(n), "arms": arms, "paired": self._paired(per_user, weights) if paired else {}}
        if paired and {"ft", "ft_lc"} <= per_user.keys() and len(weights) >= 2:
            out["auto"] = _auto(per_user, weights)
        if scope == "lifetime":
            out["lifetime_user_share"] = share
        return out

    def _paired(self, per_user: dict, weights: np.ndarray) -> dict:
        """gAUC differences between arms with 95% CIs from a paired bootstrap over users. Every arm scores the
        same events, so the users with both classes, and their weights, are the same for every arm."""
        if len(weights) < 2:
            return {}
        boot = UserBootstrap(weights, n_boot=500, seed=0)
        out = {}
        for arm, base in PAIRS:
            if arm in per_user and base in per_user:
                diff = per_user[arm] - per_user[base]
                out[f"{arm} - {base}"] = {**boot.estimate(diff), "users": len(diff)}
        return out


def _auto(per_user: dict, weights: np.ndarray) -> dict:
    """Which fine-tuned head the shadow arms say to serve: ``ft`` until ``ft_lc`` ranks better within users with a
    CI that excludes 0 (:func:`stream_ctr.quality.auto.choose`, the rule the offline ``ft_auto`` mode uses)."""
    from stream_ctr.quality.auto import choose

    decision = choose("ft", {"ft_lc": per_user["ft_lc"] - per_user["ft"]}, {"ft_lc": weights}, n_boot=500)
    return {"arm": decision.method, "switched": decision.switched, "reason": decision.reason}
