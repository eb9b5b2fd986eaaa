"""Choosing step size, step count and L2 on the validation split, with one budget for every mode.

For each ``(lr, l2)`` of the grid a :func:`~stream_ctr.evaluate.finetune.trajectory` fine-tunes every user on the
``fit`` part and scores the ``val`` part after each step count in ``steps``; the configuration with the best
validation gAUC wins (ties go to the earliest in grid order: smaller lr, smaller l2, fewer steps); a
configuration whose fine-tune diverges (non-finite predictions) is disqualified. The test part
is never looked at. Then every user is fine-tuned once more, on the whole fine-tune part (fit + val), with the
winner, and the test part is scored.

>>> len(HEAD_GRID), len(FULL_GRID)
(12, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream_ctr.evaluate.finetune import trajectory
from stream_ctr.evaluate.split import SplitData
from stream_ctr.quality.metrics import gauc, per_user_auc

__all__ = ["FULL_GRID", "Grid", "HEAD_GRID", "Choice", "tune_and_fit"]


@dataclass(frozen=True)
class Grid:
    lrs: tuple[float, ...]
    l2s: tuple[float, ...]
    steps: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.lrs) * len(self.l2s) * len(self.steps)


#: Head: a bias and a vector of ``rep_dim`` weights; cheap, so longer trajectories.
HEAD_GRID = Grid(lrs=(0.05, 0.5), l2s=(0.01, 0.3), steps=(5, 20, 60))
#: Full model: every parameter, so shorter trajectories.
FULL_GRID = Grid(lrs=(0.05, 0.5), l2s=(0.01, 0.3), steps=(5, 20))


@dataclass
class Choice:
    """The validated configuration, its validation gAUC and its per-user validation AUCs (users with both
    classes in their validation part: codes, AUCs, impressions), which :mod:`stream_ctr.quality.auto` compares."""

    lr: float
    l2: float
    steps: int
    val_gauc: float
    val_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int), repr=False)
    val_auc: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    val_n: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    pick: str | None = None  # ft_auto only: the mode it took (this choice is that mode's)


def _users(data: SplitData, parts) -> np.ndarray:
    return np.concatenate([data.user[p] for p in parts])


def tune_and_fit(
    scope, data: SplitData, method: str, grid: Grid, shrinkage: float, pg: str = "cloud", select=None
) -> tuple[np.ndarray, Choice]:
    """Pick ``(lr, l2, steps)`` by validation gAUC, refit on fit + val, return (test predictions, choice).

    ``pg`` names the global CTR correction aligns to (:meth:`SplitData.priors`): for tuning it is taken at the
    end of each user's ``fit`` part, for the final fit at the end of the whole fine-tune part. Test predictions
    are aligned with ``np.concatenate(data.test)``. ``select`` (a :class:`~stream_ctr.evaluate.companions.Selector`)
    turns each user's own events into what the user trains on (a buffer of k, or an augmented set), for tuning and
    for the final fit alike; None trains on the events as they are.
    """
    val_users = _users(data, data.val)
    val_labels = np.concatenate([data.labels[v] for v in data.val])
    checkpoints = sorted(grid.steps)
    best: Choice | None = None
    fit_pg = data.priors(data.fit, pg)
    fit_train = data.fit if select is None else select(data, data.fit, method, fit_pg, shrinkage)
    for lr in grid.lrs:
        for l2 in grid.l2s:
            preds = trajectory(scope, data, fit_train, data.val, method, lr, l2, checkpoints, shrinkage, fit_pg)
            for steps, p in zip(checkpoints, preds):
                # A diverged fine-tune (non-finite predictions) is disqualified: ranks would hide the NaNs.
                score = gauc(val_users, val_labels, p) if np.isfinite(p).all() else np.nan
                score = -np.inf if np.isnan(score) else score
                if best is None or score > best.val_gauc:
                    per_user = per_user_auc(val_users, val_labels, p) if np.isfinite(score) else ()
                    best = Choice(lr, l2, steps, float(score), *per_user)
    assert best is not None
    ft_parts = [data.ft(k) for k in range(len(data.evaluated))]
    ft_pg = data.priors(ft_parts, pg)
    ft_train = ft_parts if select is None else select(data, ft_parts, method, ft_pg, shrinkage)
    (test_pred,) = trajectory(
        scope, data, ft_train, data.test, method, best.lr, best.l2, [best.steps], shrinkage, ft_pg
    )
    return test_pred, best
