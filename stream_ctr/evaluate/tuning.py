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

from dataclasses import dataclass

import numpy as np

from ..metrics import gauc
from .finetune import trajectory
from .split import SplitData

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
    lr: float
    l2: float
    steps: int
    val_gauc: float


def _users(data: SplitData, parts) -> np.ndarray:
    return np.concatenate([data.user[p] for p in parts])


def tune_and_fit(scope, data: SplitData, method: str, grid: Grid, shrinkage: float, p_g: float
                 ) -> tuple[np.ndarray, Choice]:
    """Pick ``(lr, l2, steps)`` by validation gAUC, refit on fit + val, return (test predictions, choice).

    Test predictions are aligned with ``np.concatenate(data.test)``.
    """
    val_users = _users(data, data.val)
    val_labels = np.concatenate([data.labels[v] for v in data.val])
    checkpoints = sorted(grid.steps)
    best: Choice | None = None
    for lr in grid.lrs:
        for l2 in grid.l2s:
            preds = trajectory(scope, data, data.fit, data.val, method, lr, l2, checkpoints, shrinkage, p_g)
            for steps, p in zip(checkpoints, preds):
                # A diverged fine-tune (non-finite predictions) is disqualified: ranks would hide the NaNs.
                score = gauc(val_users, val_labels, p) if np.isfinite(p).all() else np.nan
                score = -np.inf if np.isnan(score) else score
                if best is None or score > best.val_gauc:
                    best = Choice(lr, l2, steps, float(score))
    assert best is not None
    ft_parts = [data.ft(k) for k in range(len(data.evaluated))]
    (test_pred,) = trajectory(scope, data, ft_parts, data.test, method, best.lr, best.l2, [best.steps],
                              shrinkage, p_g)
    return test_pred, best
