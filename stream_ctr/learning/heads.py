"""A lightweight per-user head on top of the global model: ``logit = g(x) + b + w . h(x)``.

``g`` is the global model's logit and ``h`` its representation (:mod:`stream_ctr.models`). The head starts at
zero, so an untrained head *is* the global model, and L2 pulls it back toward zero, i.e. toward the global model.
It follows river's small online protocol (``learn_one`` / ``predict_proba_one`` and batched ``*_many``), where
one input ``x`` is the pair ``(g, h)``.

>>> import numpy as np
>>> head = UserHead(dim=2, lr=0.5)
>>> x = (0.0, np.array([1.0, 0.0], dtype=np.float32))
>>> for _ in range(20): head.learn_one(x, 1)
>>> head.predict_proba_one(x) > 0.8
True
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_ctr.learning.correction import Targets

__all__ = ["HeadParams", "UserHead", "head_logits", "learn_rows", "learn_wave", "sigmoid"]


@dataclass(frozen=True)
class HeadParams:
    """How per-user heads learn. The one owner of these defaults: settings, heads and the evaluator read them.

    ``window`` events feed the rolling local CTR, which is shrunk toward the global CTR by ``shrinkage``
    pseudo-events; each batch takes ``steps`` SGD steps of size ``lr`` with an L2 pull ``l2`` toward zero. The
    label-corrected arm corrects with ``correction`` (a method of :mod:`stream_ctr.learning.correction`).
    """

    window: int = 100
    shrinkage: float = 20.0
    lr: float = 0.05
    l2: float = 0.01
    steps: int = 1
    correction: str = "lc"

    @classmethod
    def from_settings(cls, s) -> HeadParams:
        return cls(s.ctr_window, s.shrinkage, s.head_lr, s.head_l2, s.head_steps, s.correction)


def sigmoid(z):
    # np.minimum/np.maximum are np.clip without its Python wrappers: this runs once per arm per wave.
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -30.0), 30.0)))


def head_logits(b: np.ndarray, w: np.ndarray, rows: np.ndarray | slice, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``g + b + h . w`` per event, where event ``i`` uses head ``rows[i]`` of the stacked biases ``b [U]`` and
    weights ``w [U, d]`` (``slice(None)``: head ``i``)."""
    return g + b[rows] + np.einsum("nd,nd->n", h, w[rows])


def learn_rows(
    b: np.ndarray,
    w: np.ndarray,
    counts: np.ndarray,
    g: np.ndarray,
    h: np.ndarray,
    targets: Targets,
    lr: float,
    l2: float,
    steps: int,
) -> None:
    """Train ``U`` heads at once, in place: row ``u`` of ``b [U]`` and ``w [U, d]`` takes ``steps`` gradient steps
    of weighted cross-entropy on its own ``counts[u]`` events, which lie contiguous (user 0's first) in ``g``,
    ``h`` and ``targets``. Each head's step is the mean over its events, as if it were trained alone: one gather,
    one update and one segment sum per step for the whole batch, no per-user Python.

    Where ``targets.bias_labels`` are given, the bias learns them at the plain logit and the weights learn
    ``targets.labels`` at the logit plus ``targets.logit_offset``."""
    y, wts = targets.labels, targets.weights
    rows: np.ndarray | slice
    if len(counts) == len(y) and (counts == 1).all():  # one event a head (test-then-train's waves): no sums
        rows, mean = slice(None), _same  # head i is event i: views, no gather, no sums
    else:
        rows = np.repeat(np.arange(len(counts)), counts)
        starts = np.cumsum(counts) - counts
        n = np.maximum(counts, 1).astype(np.float32)

        def mean(x):
            return np.add.reduceat(x, starts, axis=0) / n.reshape(-1, *([1] * (x.ndim - 1)))

    def logits():
        return head_logits(b, w, rows, g, h)

    _descend(b, w, h, logits(), logits, y, wts, targets.logit_offset, targets.bias_labels, mean, lr, l2, steps)


def learn_wave(
    b: np.ndarray,
    w: np.ndarray,
    g: np.ndarray,
    h: np.ndarray,
    logit: np.ndarray,
    targets: Sequence[Targets],
    lr: float,
    l2: float,
    steps: int,
) -> None:
    """:func:`learn_rows` for one event a head and ``A`` arms stacked, in place: head ``i`` of arm ``a`` (bias
    ``b [A, n]``, weights ``w [A, n, d]``) takes ``steps`` steps on event ``i`` (``g [n]``, ``h [n, d]``) and
    ``targets[a]``; ``logit [A, n]`` is every head's logit as it stands (the one the wave scored with). One set of
    array calls for every arm: test-then-train runs this once per wave, and in time order (a user's sitting) a wave
    is often one event, so the calls' fixed costs are the price of an event."""
    y, wts = np.array([t.labels for t in targets]), np.array([t.weights for t in targets])
    shifted = any(not isinstance(t.logit_offset, float) or t.logit_offset for t in targets)
    offset = np.array([np.broadcast_to(t.logit_offset, y.shape[1:]) for t in targets]) if shifted else 0.0
    own_bias = any(t.bias_labels is not None for t in targets)
    bias_y = np.array([t.labels if t.bias_labels is None else t.bias_labels for t in targets]) if own_bias else None

    def logits():
        return g + b + np.einsum("nd,and->an", h, w)

    _descend(b, w, h, logit, logits, y, wts, offset, bias_y, _same, lr, l2, steps)


def _same(x):
    return x


def _descend(b, w, h, logit, logits, y, wts, offset, bias_y, mean, lr: float, l2: float, steps: int) -> None:
    """The heads' gradient steps, in place, for :func:`learn_rows` and :func:`learn_wave`: weighted cross-entropy
    on soft labels ``y`` at the logit plus ``offset`` for the weights, on ``bias_y`` (None: ``y``) at the plain
    logit for the bias; ``logit`` is the heads' logit now, ``logits()`` recomputes it after a step, and ``mean``
    takes an event-aligned array to the heads' (a segment mean, or the identity for one event a head)."""
    for step in range(steps):
        if step:
            logit = logits()
        err = wts * (sigmoid(logit + offset) - y)
        err_bias = err if bias_y is None else wts * (sigmoid(logit) - bias_y)
        b -= (lr * (mean(err_bias) + l2 * b)).astype(np.float32)
        w -= (lr * (mean(h * err[..., None]) + l2 * w)).astype(np.float32)


class UserHead:
    """Bias plus a weight vector over the representation; trained by SGD on (soft) targets."""

    __slots__ = ("b", "w", "lr", "l2", "steps")

    def __init__(self, dim: int, lr: float = HeadParams.lr, l2: float = HeadParams.l2, steps: int = HeadParams.steps):
        self.b = 0.0
        self.w = np.zeros(dim, dtype=np.float32)
        self.lr, self.l2, self.steps = lr, l2, steps

    # --- batched protocol ----------------------------------------------------------------------------------
    def logit_many(self, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        return g + self.b + h @ self.w

    def predict_proba_many(self, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit_many(g, h))

    def learn_many(self, g: np.ndarray, h: np.ndarray, targets: Targets | np.ndarray) -> None:
        """``steps`` gradient steps of weighted cross-entropy on ``targets`` (labels may be soft): this head alone
        through :func:`learn_rows`."""
        if not len(g):
            return
        if not isinstance(targets, Targets):
            targets = Targets(np.asarray(targets, dtype=np.float32), np.ones(len(g), dtype=np.float32))
        b, w = np.array([self.b], dtype=np.float32), self.w.reshape(1, -1)
        learn_rows(b, w, np.array([len(g)]), g, h, targets, self.lr, self.l2, self.steps)
        # The bias stays at float32 precision, as it is stored, so a restored head is the same head.
        self.b, self.w = float(b[0]), w.reshape(-1)

    # --- one-at-a-time protocol ----------------------------------------------------------------------------
    def predict_proba_one(self, x: tuple[float, np.ndarray]) -> float:
        g, h = x
        return float(self.predict_proba_many(np.array([g], np.float32), h[None, :])[0])

    def learn_one(self, x: tuple[float, np.ndarray], y: float) -> None:
        g, h = x
        self.learn_many(np.array([g], np.float32), h[None, :], np.array([y], np.float32))

    # --- state ---------------------------------------------------------------------------------------------
    @property
    def norm(self) -> float:
        return float(np.sqrt(self.b * self.b + float(self.w @ self.w)))

    def to_bytes(self) -> bytes:
        return struct.pack("<fH", self.b, len(self.w)) + self.w.astype("<f4").tobytes()

    def load_bytes(self, data: bytes, offset: int = 0) -> int:
        """Restore weights from ``data`` at ``offset``; returns the offset after them."""
        b, dim = struct.unpack_from("<fH", data, offset)
        offset += 6
        self.b = float(b)
        self.w = np.frombuffer(data, dtype="<f4", count=dim, offset=offset).astype(np.float32)
        return offset + 4 * dim
