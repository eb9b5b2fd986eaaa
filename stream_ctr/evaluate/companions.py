"""What a user fine-tunes on, beside its whole fine-tune part: a k-sample on-device buffer (ODE, FIFO,
reservoir) or the local part augmented with other users' look-alike samples (CoDA).

Each is a *selection*: given each user's own training events (``fit`` while tuning, ``fit + val`` at the final
refit) it returns a :class:`TrainSet` per user, which :func:`stream_ctr.evaluate.finetune.trajectory` trains on.
They read only the frozen cloud model's logit ``g`` and representation ``h`` of each event (what a head sees), so
they are the same in both scopes and cost no extra model evaluation.

**Buffers of k samples** (a device that can keep only ``k`` samples; events arrive in time order):

* ``fifo``: the last ``k``;
* ``reservoir``: Vitter's algorithm R, a uniform sample of ``k`` of the stream, seeded per (run seed, user);
* ``ode``: ODE (Gong et al., "Online Data Selection for Federated Learning with Limited Storage", arXiv
  2209.00195): a sample's value is the projection of its local gradient onto the global gradient,
  ``v(x) = <grad l(x), G> / |G|`` (the first-order decrease of the global loss that a step on ``x`` buys), and
  the buffer keeps the ``k`` most valuable samples seen so far (a new sample replaces the least valuable one
  when it is worth more). As in the paper's efficient variant, gradients are taken w.r.t. the last layer: here
  the head's ``(b, w)`` at the cloud model, ``grad l(x) = (sigmoid(g) - t) [1, h]`` with ``t`` the target the user
  trains on (the corrected label for ``ft_lc_ode``), and ``G`` = the same gradient with raw labels averaged over
  every user's events of the current phase (what the server estimates from the clients' reports).

  Memory per user: ``k`` samples x (``slots`` x (8-byte id + 4-byte value) + 4-byte label + 8-byte time + 4-byte
  value) bytes (:func:`buffer_bytes`); the global gradient, ``rep_dim + 1`` floats, is shared by all users.

**CoDA** (device-cloud collaborative learning via data augmentation): the cloud keeps a bounded pool of
``pool_size`` events drawn (seeded) from every user's *cloud* (training-period) part. For a user's ``n`` local
samples it retrieves, for each, the ``neighbours`` most similar pool events of *other* users (cosine similarity of
``h``); a small per-user classifier (logistic regression on ``h``, the user's own samples against as many random
pool events of other users, class-balanced) keeps the retrieved events it scores as the user's own (p >= 0.5),
the ``max_extra`` most confident at most. The kept events are trained on beside the local ones with weight
``extra_weight``, each with its own label (corrected with its owner's prior for ``ft_lc_coda``). Cost per user:
``n x pool_size x rep_dim`` multiply-adds for retrieval and ``steps x 2n x rep_dim`` for the filter; memory on
the cloud side ``pool_size x (rep_dim + 1)`` floats (:func:`pool_bytes`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from stream_ctr.learning.correction import correct, shrunk_ctr
from stream_ctr.learning.heads import sigmoid

__all__ = [
    "BUFFERS",
    "CoDA",
    "CompanionConfig",
    "Selector",
    "TrainSet",
    "buffer_bytes",
    "ode_values",
    "pool_bytes",
    "stream_buffer",
]

#: Buffer kinds a ``ft_*_<kind>`` mode may use.
BUFFERS = ("ode", "fifo", "reservoir")


@dataclass(frozen=True)
class CompanionConfig:
    """The companions' settings: the buffer size and CoDA's pool, retrieval and filter."""

    buffer_k: int = 8
    pool_size: int = 10_000
    neighbours: int = 5
    max_extra: int = 32
    extra_weight: float = 0.5
    filter_steps: int = 100
    filter_lr: float = 0.5
    filter_l2: float = 0.01


@dataclass(frozen=True)
class TrainSet:
    """One user's training events: its own (``own``) and, for CoDA, other users' (``extra``, with their owners'
    local CTR ``extra_pu`` for correction, trained with weight ``extra_weight``)."""

    own: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    extra_pu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra_weight: float = 1.0


def stream_buffer(values: np.ndarray, k: int) -> np.ndarray:
    """Positions kept by a ``k``-slot buffer that sees ``values`` in order and keeps the most valuable: a new
    sample evicts the least valuable one held when it is worth strictly more (O(k) memory, a min-heap). Returns
    the kept positions in arrival order."""
    heap: list[tuple[float, int]] = []
    for i, v in enumerate(np.asarray(values, dtype=float)):
        if len(heap) < k:
            heapq.heappush(heap, (v, i))
        elif v > heap[0][0]:
            heapq.heapreplace(heap, (v, i))
    return np.sort(np.array([i for _, i in heap], dtype=np.int64))


def reservoir(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Algorithm R over a stream of ``n`` items: positions of a uniform sample of ``k``, in arrival order."""
    kept = list(range(min(n, k)))
    for i in range(k, n):
        j = int(rng.integers(0, i + 1))
        if j < k:
            kept[j] = i
    return np.sort(np.array(kept, dtype=np.int64))


def _grad_rows(g: np.ndarray, h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-sample gradient of the cross-entropy w.r.t. a head's ``(b, w)`` at zero: ``(sigmoid(g) - t) [1, h]``."""
    r = (sigmoid(g) - t)[:, None]
    return np.concatenate([r, r * h], axis=1)


def ode_values(g: np.ndarray, h: np.ndarray, targets: np.ndarray, global_grad: np.ndarray) -> np.ndarray:
    """ODE's value of each sample: its local gradient projected on the global gradient."""
    norm = float(np.linalg.norm(global_grad))
    return _grad_rows(g, h, targets) @ global_grad / max(norm, 1e-12)


def buffer_bytes(k: int, slots: int) -> int:
    """Bytes a ``k``-sample buffer holds on a device: per sample the hashed ids (int64) and values (float32) of
    ``slots`` features, the label (float32), the time (float64) and the sample's value (float32)."""
    return k * (slots * (8 + 4) + 4 + 8 + 4)


def pool_bytes(pool: int, rep_dim: int) -> int:
    """Bytes of CoDA's cloud-side pool: each event's representation and label (float32) and event index (int64)."""
    return pool * ((rep_dim + 1) * 4 + 8)


class Selector:
    """The selection of one companion ``kind`` (``ode``, ``fifo``, ``reservoir``, ``coda``) over one cloud model's
    ``(g, h)``; called as ``selector(data, parts, method, p_g)`` -> one :class:`TrainSet` per user."""

    def __init__(self, kind: str, g: np.ndarray, h: np.ndarray, cfg: CompanionConfig, seed: int):
        if kind not in (*BUFFERS, "coda"):
            raise ValueError(f"unknown companion {kind!r}")
        self.kind, self.g, self.h, self.cfg, self.seed = kind, g, h, cfg, seed
        self._coda: CoDA | None = None
        self._augmented: dict[int, list[TrainSet]] = {}  # CoDA's sets do not depend on the mode: one per phase

    def __call__(self, data, parts, method: str, p_g, shrinkage: float) -> list[TrainSet]:
        if self.kind == "coda":
            if self._coda is None:
                self._coda = CoDA(data, self.g, self.h, self.cfg, self.seed, shrinkage)
            key = hash(np.concatenate(parts).tobytes())
            if key not in self._augmented:
                self._augmented[key] = [self._coda.augment(data.user[p[0]], p) for p in parts]
            return self._augmented[key]
        k = self.cfg.buffer_k
        if self.kind == "fifo":
            return [TrainSet(p[-k:]) for p in parts]
        if self.kind == "reservoir":
            return [
                TrainSet(p[reservoir(len(p), k, np.random.default_rng([self.seed, int(data.user[p[0]])]))])
                for p in parts
            ]
        return self._ode(data, parts, method, p_g, shrinkage)

    def _ode(self, data, parts, method: str, p_g, shrinkage: float) -> list[TrainSet]:
        every = np.concatenate(parts)
        global_grad = _grad_rows(self.g[every], self.h[every], data.labels[every]).mean(axis=0)
        out = []
        for p, pg in zip(parts, np.broadcast_to(np.asarray(p_g, dtype=float), (len(parts),))):
            y = data.labels[p]
            t = correct(y, shrunk_ctr(float(y.sum()), len(y), float(pg), shrinkage), float(pg), method, len(y))
            values = ode_values(self.g[p], self.h[p], t.labels, global_grad)
            out.append(TrainSet(p[stream_buffer(values, self.cfg.buffer_k)]))
        return out


class CoDA:
    """CoDA's cloud side: the bounded pool of training-period events and the per-user retrieval and filter."""

    def __init__(self, data, g: np.ndarray, h: np.ndarray, cfg: CompanionConfig, seed: int, shrinkage: float):
        cloud = data.cloud_idx
        rng = np.random.default_rng(seed)
        self.pool = np.sort(rng.choice(cloud, size=min(cfg.pool_size, len(cloud)), replace=False))
        self.cfg, self.h, self.seed = cfg, h, seed
        self.unit = _unit(h[self.pool])
        self.pool_user = data.user[self.pool]
        # each pool event's owner's local CTR over its cloud part, for correcting its label as the owner's
        clicks = np.bincount(data.user[cloud], weights=data.labels[cloud], minlength=len(data.user_names))
        counts = np.bincount(data.user[cloud], minlength=len(data.user_names))
        p_g = data.global_ctr
        owner_pu = (clicks + shrinkage * p_g) / (counts + shrinkage)
        self.pool_pu = owner_pu[self.pool_user]

    def augment(self, user: int, own: np.ndarray) -> TrainSet:
        """The user's own events plus the retrieved pool events its filter keeps."""
        others = np.flatnonzero(self.pool_user != user)
        if len(others) == 0:
            return TrainSet(own)
        sims = _unit(self.h[own]) @ self.unit[others].T  # [n, |others|]
        r = min(self.cfg.neighbours, len(others))
        nearest = np.argpartition(-sims, r - 1, axis=1)[:, :r]
        candidates = np.unique(others[nearest.ravel()])
        rng = np.random.default_rng([self.seed, int(user)])
        negatives = others[rng.choice(len(others), size=min(len(others), max(len(own), 20)), replace=False)]
        clf = fit_filter(self.h[own], self.h[self.pool[negatives]], self.cfg)
        prob = clf(self.h[self.pool[candidates]])
        keep = candidates[prob >= 0.5]
        keep = keep[np.argsort(-prob[prob >= 0.5], kind="stable")[: self.cfg.max_extra]]
        return TrainSet(own, self.pool[keep], self.pool_pu[keep], self.cfg.extra_weight)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_filter(own: np.ndarray, others: np.ndarray, cfg: CompanionConfig):
    """CoDA's per-user filter: L2-regularised logistic regression on standardised features, the user's own samples
    (class 1) against other users' (class 0), each class weighted to half the loss; returns ``x -> p(own)``."""
    x = np.concatenate([own, others]).astype(np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mu) / sd
    y = np.r_[np.ones(len(own)), np.zeros(len(others))]
    sw = np.r_[np.full(len(own), 0.5 / len(own)), np.full(len(others), 0.5 / len(others))]
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(cfg.filter_steps):
        r = sw * (sigmoid(z @ w + b) - y)
        w -= cfg.filter_lr * (z.T @ r + cfg.filter_l2 * w)
        b -= cfg.filter_lr * float(r.sum())
    return lambda q: sigmoid(((np.asarray(q, np.float64) - mu) / sd) @ w + b)
