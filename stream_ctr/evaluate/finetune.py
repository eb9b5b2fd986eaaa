"""Per-user fine-tuning in two scopes, with the same optimiser for both and for every correction method.

* ``head``: the service's own :class:`stream_ctr.learning.heads.UserHead` over the frozen cloud model's ``(g, h)``;
  its L2 pulls ``b, w`` toward 0, i.e. toward the cloud model.
* ``full``: a per-user copy of the whole torch model (as it would run on a device), every parameter trained,
  with an L2 pull ``l2 * (p - p_cloud)`` toward the cloud weights.

The optimiser is the same everywhere: full-batch gradient descent (SGD over the user's whole fine-tune part) on
the weighted cross-entropy of the :class:`stream_ctr.learning.correction.Targets` (soft labels, weights, training-only
logit offset) that :func:`stream_ctr.learning.correction.correct` returns, mean over the user's events. ``p_u`` is
:func:`stream_ctr.learning.correction.shrunk_ctr` of the labels being trained on. No randomness: a user's result depends
only on its data, the cloud model and ``(lr, l2, steps)``.

The full scope's descent *backtracks*: a step that does not lower the user's objective
(cross-entropy + L2 pull) is undone and retried at half the step size, so the objective never rises. Without it,
DCN-v2 copies fine-tuned on corrected labels at step size 0.5 diverged to NaN for a few users (a confident cloud
model, soft labels far from its predictions, and cross layers whose curvature grows with the weights). A step that
descends is the plain gradient step, so runs that never overshot are unchanged.

A run is a *trajectory*: for one ``(lr, l2)`` the model is scored after each step count in ``checkpoints``, so
tuning ``steps`` costs no extra training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stream_ctr.evaluate.companions import TrainSet
from stream_ctr.evaluate.split import SplitData
from stream_ctr.learning.correction import Targets, correct, shrunk_ctr
from stream_ctr.learning.heads import UserHead
from stream_ctr.models import CTRModel

__all__ = ["FullScope", "HeadScope", "SCOPES", "train_targets", "trajectory"]

SCOPES = ("head", "full")
#: Step-size halvings the full scope tries before it gives up a step (2^-12 of the tuned step size).
HALVINGS = 12


class HeadScope:
    """Fine-tunes a :class:`UserHead` on the frozen cloud model's logit ``g`` and representation ``h``."""

    name = "head"

    def __init__(self, g: np.ndarray, h: np.ndarray):
        self.g, self.h = g.astype(np.float32), h.astype(np.float32)

    def fit_predict(
        self, tr: np.ndarray, ev: np.ndarray, targets: Targets, lr: float, l2: float, checkpoints: Sequence[int]
    ) -> list[np.ndarray]:
        head = UserHead(self.h.shape[1], lr=lr, l2=l2)
        g_tr, h_tr, g_ev, h_ev = self.g[tr], self.h[tr], self.g[ev], self.h[ev]
        out, done = [], 0
        for c in checkpoints:
            if c > done:
                head.steps = c - done
                head.learn_many(g_tr, h_tr, targets)
                done = c
            out.append(head.predict_proba_many(g_ev, h_ev))
        return out


class FullScope:
    """Fine-tunes a per-user copy of every parameter of the cloud model, pulled toward the cloud weights.

    Embedding tables are updated row-wise: a row no training event of the user touches has zero gradient and
    zero pull (it still equals the cloud weight), so only the touched rows are stepped and restored afterwards.
    The result is the same as stepping the whole table, at a fraction of the cost.
    """

    name = "full"

    def __init__(self, model: CTRModel, ids: np.ndarray, vals: np.ndarray):
        self.work = copy.deepcopy(model).eval()
        tables = {id(m.weight) for m in self.work.modules() if isinstance(m, torch.nn.Embedding)}
        self.params = list(self.work.parameters())
        self.is_table = [id(p) in tables for p in self.params]
        self.p0 = [p.detach().clone() for p in self.params]
        self.ids, self.vals = torch.from_numpy(ids), torch.from_numpy(vals)
        self._touched = torch.zeros(0, dtype=torch.long)

    def _reset(self) -> None:
        with torch.no_grad():
            for p, p0, table in zip(self.params, self.p0, self.is_table):
                if table:
                    p[self._touched] = p0[self._touched]
                else:
                    p.copy_(p0)

    def fit_predict(
        self, tr: np.ndarray, ev: np.ndarray, targets: Targets, lr: float, l2: float, checkpoints: Sequence[int]
    ) -> list[np.ndarray]:
        if targets.bias_labels is not None:
            raise ValueError("separate bias labels need a head (scope head)")
        self._reset()
        ids_tr, vals_tr = self.ids[torch.from_numpy(tr)], self.vals[torch.from_numpy(tr)]
        ids_ev, vals_ev = self.ids[torch.from_numpy(ev)], self.vals[torch.from_numpy(ev)]
        self._touched = torch.unique(ids_tr)
        y, w = torch.from_numpy(targets.labels), torch.from_numpy(np.asarray(targets.weights, np.float32))
        batch = (ids_tr, vals_tr, y, w, torch.as_tensor(np.asarray(targets.logit_offset, np.float32)))
        current = self._objective(batch, l2)
        self.losses = [float(current.detach())]  # the objective after each step: never rises
        out, done = [], 0
        for c in checkpoints:
            for _ in range(c - done):
                current = self._descend(batch, current, lr, l2)
                self.losses.append(float(current.detach()))
            done = max(done, c)
            with torch.no_grad():
                out.append(torch.sigmoid(self.work(ids_ev, vals_ev)[0]).numpy())
        return out

    def _objective(self, batch, l2: float) -> torch.Tensor:
        """The user's training objective at the current weights (with its autograd graph): the weighted
        cross-entropy of the targets plus ``l2 / 2 * |p - p_cloud|^2`` over the touched rows and the dense part."""
        ids, vals, y, w, offset = batch
        logit, _ = self.work(ids, vals)
        loss = (w * F.binary_cross_entropy_with_logits(logit + offset, y, reduction="none")).mean()
        rows = self._touched
        pull = sum(
            ((p[rows] - p0[rows]) if table else (p - p0)).pow(2).sum()
            for p, p0, table in zip(self.params, self.p0, self.is_table)
        )
        return loss + 0.5 * l2 * pull

    def _descend(self, batch, current: torch.Tensor, lr: float, l2: float) -> torch.Tensor:
        """One gradient-descent step from ``current`` (the objective here, with its graph), with backtracking: a
        step that does not lower the objective (or makes it non-finite) is undone and retried at half the step
        size, up to :data:`HALVINGS` times; after that the weights stay where they are. The gradient of the
        objective is the one the plain update used (``g + l2 (p - p_cloud)``), so a step that descends is
        exactly the plain step. Returns the objective at the new weights."""
        rows = self._touched
        grads = torch.autograd.grad(current, self.params, allow_unused=True)
        steps, saved = [], []
        for p, g, table in zip(self.params, grads, self.is_table):
            g = torch.zeros_like(p) if g is None else g
            steps.append(g[rows] if table else g)
            saved.append((p[rows] if table else p).detach().clone())
        rate, before = lr, float(current.detach())
        for _ in range(HALVINGS + 1):
            self._move(steps, saved, rate)
            trial = self._objective(batch, l2)
            value = float(trial.detach())
            if math.isfinite(value) and value <= before:
                return trial
            rate /= 2
        self._move(steps, saved, 0.0)
        return self._objective(batch, l2)

    def _move(self, steps, saved, rate: float) -> None:
        """Set the weights to ``saved - rate * steps`` (rows of tables, whole dense tensors)."""
        rows = self._touched
        with torch.no_grad():
            for p, d, p_saved, table in zip(self.params, steps, saved, self.is_table):
                if table:
                    p[rows] = p_saved - rate * d
                else:
                    p.copy_(p_saved - rate * d)


def trajectory(
    scope,
    data: SplitData,
    train: Sequence[np.ndarray | TrainSet],
    evals: Sequence[np.ndarray],
    method: str,
    lr: float,
    l2: float,
    checkpoints: Sequence[int],
    shrinkage: float,
    p_g,
) -> list[np.ndarray]:
    """Fine-tune every user on ``train[k]`` and score ``evals[k]`` after each checkpoint.

    ``train[k]`` is the user's event indices or a :class:`~stream_ctr.evaluate.companions.TrainSet` (its own events
    plus other users', :mod:`.companions`). ``p_g`` is one global CTR for every user or one per user (``p_g[k]`` for
    ``train[k]``, :meth:`SplitData.priors`). Returns one array per checkpoint: the predictions for
    ``np.concatenate(evals)``.
    """
    per_ckpt: list[list[np.ndarray]] = [[] for _ in checkpoints]
    for tr, ev, pg in zip(train, evals, np.broadcast_to(np.asarray(p_g, dtype=float), (len(train),))):
        idx, targets = train_targets(data, tr, method, float(pg), shrinkage)
        preds = scope.fit_predict(idx, ev, targets, lr, l2, checkpoints)
        for acc, p in zip(per_ckpt, preds):
            acc.append(p)
    return [np.concatenate(acc) if acc else np.zeros(0) for acc in per_ckpt]


def train_targets(data: SplitData, tr, method: str, pg: float, shrinkage: float) -> tuple[np.ndarray, Targets]:
    """The events one user trains on and their :class:`Targets`. ``p_u`` is the shrunk CTR of the user's *own*
    labels; other users' events (a :class:`TrainSet`'s ``extra``) are corrected with their owners' ``p_u`` and
    weighted by ``extra_weight``."""
    ts = tr if isinstance(tr, TrainSet) else TrainSet(np.asarray(tr))
    y = data.labels[ts.own]
    p_u = shrunk_ctr(float(y.sum()), len(y), pg, shrinkage)
    own = correct(y, p_u, pg, method, len(y))
    if len(ts.extra) == 0:
        return ts.own, own
    extra = correct(data.labels[ts.extra], ts.extra_pu, pg, method, len(y))
    n, m = len(ts.own), len(ts.extra)

    def cat(a, b):
        return np.concatenate([np.broadcast_to(np.asarray(a, np.float32), (n,)), np.broadcast_to(b, (m,))])

    bias = None if own.bias_labels is None else cat(own.bias_labels, data.labels[ts.extra])
    targets = Targets(
        cat(own.labels, extra.labels).astype(np.float32),
        cat(own.weights, np.asarray(extra.weights, np.float32) * ts.extra_weight).astype(np.float32),
        cat(own.logit_offset, extra.logit_offset) if method in ("logit", "lc_bias") else 0.0,
        bias,
    )
    return np.concatenate([ts.own, ts.extra]), targets
