"""Online metrics per arm over a sliding window and over the whole run (lifetime).

The window keeps the last ``window`` predictions in ring buffers (the oldest drop out); the lifetime scope keeps
every prediction up to ``lifetime_cap`` rows (about 40 bytes a row), which bounds memory on an endless stream and
is reported as ``lifetime_truncated``. Values are the pure functions of :mod:`stream_ctr.metrics`.
"""

from __future__ import annotations

import threading

import numpy as np

from .arms import PAIRS
from .bootstrap import UserBootstrap
from .metrics import auc, calibration, logloss, per_user_auc, user_key

__all__ = ["OnlineMetrics"]


class _Buffer:
    def __init__(self, arms, capacity: int, ring: bool):
        self.capacity, self.ring = capacity, ring
        self.users = np.empty(capacity, dtype=np.int64)
        self.labels = np.empty(capacity, dtype=np.float32)
        self.preds = {arm: np.empty(capacity, dtype=np.float32) for arm in arms}
        self.size = 0  # rows held
        self.pos = 0   # next write position (ring) / next free row (append)
        self.dropped = 0

    def add(self, users, labels, preds) -> None:
        n = len(labels)
        if self.ring:
            if n >= self.capacity:
                users, labels = users[-self.capacity:], labels[-self.capacity:]
                preds = {a: p[-self.capacity:] for a, p in preds.items()}
                n = self.capacity
            idx = (self.pos + np.arange(n)) % self.capacity
            self.pos = (self.pos + n) % self.capacity
            self.size = min(self.size + n, self.capacity)
        else:
            room = self.capacity - self.pos
            self.dropped += max(0, n - room)
            n = min(n, room)
            idx = np.arange(self.pos, self.pos + n)
            self.pos += n
            self.size = self.pos
        self.users[idx], self.labels[idx] = users[:n], labels[:n]
        for arm, p in preds.items():
            self.preds[arm][idx] = p[:n]

    def view(self):
        s = self.size
        return self.users[:s], self.labels[:s], {a: p[:s] for a, p in self.preds.items()}


class OnlineMetrics:
    def __init__(self, arms, window: int = 20000, lifetime_cap: int = 5_000_000):
        self.arms = tuple(arms)
        self._lock = threading.Lock()
        self._buffers = {"window": _Buffer(self.arms, window, ring=True),
                         "lifetime": _Buffer(self.arms, lifetime_cap, ring=False)}

    def record(self, users, labels: np.ndarray, preds: dict[str, np.ndarray]) -> None:
        uid = np.fromiter((user_key(u) for u in users), dtype=np.int64, count=len(users))
        with self._lock:
            for buf in self._buffers.values():
                buf.add(uid, labels, preds)

    def summary(self, scope: str = "window", paired: bool = False) -> dict:
        """``{"n": rows, "arms": {arm: {gauc, auc, logloss, calibration}}}`` for ``scope``, and with ``paired``
        the bootstrap CIs of the gAUC differences between arms (a 500 x users matrix: asked for by a report, not
        computed on every refresh)."""
        with self._lock:
            users, labels, preds = (a.copy() if isinstance(a, np.ndarray) else {k: v.copy() for k, v in a.items()}
                                    for a in self._buffers[scope].view())
            dropped = self._buffers[scope].dropped
        arms, per_user = {}, {}
        for arm, p in preds.items():
            _, per_user[arm], weights = per_user_auc(users, labels, p)
            g = float((per_user[arm] * weights).sum() / weights.sum()) if len(weights) else float("nan")
            arms[arm] = {"gauc": g, "auc": auc(labels, p),
                         "logloss": logloss(labels, p) if len(p) else float("nan"),
                         "calibration": calibration(labels, p)}
        out = {"n": int(len(labels)), "arms": arms, "paired": self._paired(per_user, weights) if paired else {}}
        if scope == "lifetime":
            out["lifetime_truncated"] = dropped
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
                out[f"{arm} - {base}"] = {"delta": boot.mean(diff), "ci": list(boot.ci(diff)), "users": len(diff)}
        return out
