"""Test-then-train: the one core loop. The Faust agent and the offline replay both call :func:`test_then_train`.

For a batch of events it (1) scores every event with every arm's model, as they stand *before* the batch,
(2) returns those predictions for online metrics, then (3) learns: updates each user's rolling CTR, corrects the
user's labels for the fine-tuned arms and takes a head step. Events at or below a user's last applied offset
are skipped, so a redelivered batch is not learned twice. Each user's gap to the global CTR comes back for the
drift metrics (:mod:`stream_ctr.drift`), and the user's state remembers since when the gap is beyond the
user's band.

The arms (:mod:`stream_ctr.arms`): ``global`` (the snapshot alone), ``ft`` (a head fine-tuned on raw labels)
and ``ft_lc`` (a head fine-tuned on label-corrected targets).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import MutableMapping, Sequence

import numpy as np

from .arms import ARMS, FINE_TUNED
from .correction import correct
from .drift import DriftParams, user_z
from .events import Event
from .heads import HeadParams, sigmoid
from .snapshot import LoadedModel
from .state import UserState

__all__ = ["BatchResult", "test_then_train"]


@dataclass
class BatchResult:
    users: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # the applied events, aligned with ``users``
    labels: list[np.ndarray] = field(default_factory=list)
    preds: dict[str, list[np.ndarray]] = field(default_factory=lambda: {arm: [] for arm in ARMS})
    duplicates: int = 0
    gaps: dict[str, float] = field(default_factory=dict)  # user -> p_u - p_g after the batch
    z: dict[str, float] = field(default_factory=dict)  # user -> window CTR vs p_g in sampling stds (drift.user_z)
    label_shift: float = 0.0  # sum over applied events of |label-corrected target - label| (the ft_lc arm)

    @property
    def applied(self) -> int:
        return len(self.users)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(users, labels, {arm: probs})`` as flat arrays, one row per applied event."""
        if not self.users:
            empty = np.zeros(0, np.float32)
            return np.array([], dtype=object), empty, {arm: empty for arm in ARMS}
        return (np.array(self.users, dtype=object), np.concatenate(self.labels),
                {arm: np.concatenate(p) for arm, p in self.preds.items()})


def test_then_train(
    records: Sequence[tuple[Event, int]],
    model: LoadedModel,
    states: MutableMapping[str, UserState],
    params: HeadParams,
    band_z: float = DriftParams.user_z,
) -> BatchResult:
    """Score then learn on ``records`` (``(event, offset)`` pairs in offset order per user). A user whose window
    CTR lies more than ``band_z`` sampling stds from ``p_g`` is drifting (``UserState.drift_since``)."""
    result = BatchResult()
    by_user: dict[str, list[int]] = defaultdict(list)
    fresh: list[Event] = []
    offsets: list[int] = []
    cached: dict[str, UserState | None] = {}
    for event, offset in records:
        uid = event.user_id
        if uid not in cached:
            cached[uid] = states.get(uid)
        state = cached[uid]
        if state is not None and offset <= state.last_offset:
            result.duplicates += 1
            continue
        by_user[uid].append(len(fresh))
        fresh.append(event)
        offsets.append(offset)
    if not fresh:
        return result

    g_all, h_all = model.forward(fresh)
    p_g = model.snapshot.global_ctr
    for uid, idx in by_user.items():
        state = cached[uid] or UserState.new(params.window, model.rep_dim, tuple(FINE_TUNED))
        state.reanchor(model.version, model.rep_dim)
        g, h = g_all[idx], h_all[idx]
        y = np.fromiter((fresh[i].label for i in idx), dtype=np.float32, count=len(idx))

        # Test: every arm scores the user's events before learning from them.
        result.users.extend([uid] * len(idx))
        result.events.extend(fresh[i] for i in idx)
        result.labels.append(y)
        result.preds["global"].append(sigmoid(g))
        for arm in FINE_TUNED:
            result.preds[arm].append(state.heads[arm].predict_proba_many(g, h))

        p_u, result.label_shift = _learn(state, g, h, y, p_g, params, result.label_shift)
        state.last_offset = max(offsets[i] for i in idx)
        z = user_z(state.ctr.window_clicks, state.ctr.window_n, p_g)
        state.drifting(abs(z) > band_z, fresh[idx[-1]].ts)
        states[uid] = state  # one write per user per batch (one changelog record in Faust)
        result.gaps[uid], result.z[uid] = p_u - p_g, z
    return result


def _learn(state: UserState, g: np.ndarray, h: np.ndarray, y: np.ndarray, p_g: float, params: HeadParams,
           label_shift: float) -> tuple[float, float]:
    """Train one user on labels ``y``: rolling CTR first, so ``p_u`` reflects the samples being fine-tuned on,
    then a step of each fine-tuned head on its (corrected) targets. Returns ``p_u`` and ``label_shift`` plus the
    label-corrected arm's sum of |target - label|."""
    for label in y:
        state.ctr.update(int(label))
    p_u = state.ctr.estimate(p_g, params.shrinkage)
    for arm, method in FINE_TUNED.items():
        method = params.correction if method == "lc" else method  # the label-corrected arm's variant
        head = state.heads[arm]
        head.lr, head.l2, head.steps = params.lr, params.l2, params.steps
        targets = correct(y, p_u, p_g, method, state.ctr.window_n)
        head.learn_many(g, h, targets)
        if method != "none":
            label_shift += float(np.abs(targets.labels - y).sum())
    return p_u, label_shift
