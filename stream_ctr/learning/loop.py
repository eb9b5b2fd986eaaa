"""Test-then-train: the one core loop. The Faust agent and the offline replay both call :func:`test_then_train`.

For a batch of events it (1) scores every event with every arm's model *before* learning it (a user's head as it
stands after the user's earlier events in the batch), (2) returns those predictions for online metrics, and
(3) learns: updates each user's rolling CTR, corrects the user's labels for the fine-tuned arms and takes a head
step, one event of each user at a time. Events at or below a user's last applied offset
are skipped, so a redelivered batch is not learned twice. Each user's gap to the global CTR comes back for the
drift metrics (:mod:`stream_ctr.learning.drift`), and the user's state remembers since when the gap is beyond the
user's band.

The arms (:mod:`stream_ctr.contracts.arms`): ``global`` (the snapshot alone), ``ft`` (a head fine-tuned on raw labels)
and ``ft_lc`` (a head fine-tuned on label-corrected targets).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_ctr.contracts.arms import ARMS, CONTROL, FINE_TUNED
from stream_ctr.contracts.events import Event
from stream_ctr.learning.catch_up import CatchUp, UserSteps
from stream_ctr.learning.correction import correct
from stream_ctr.learning.drift import DriftParams, user_z
from stream_ctr.learning.heads import HeadParams, learn_wave, sigmoid
from stream_ctr.learning.state import UserState
from stream_ctr.models.snapshot import LoadedModel

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
    user_steps: UserSteps | None = None  # the users' in-order first-order steps, for CatchUp.learn

    @property
    def applied(self) -> int:
        return len(self.users)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(users, labels, {arm: probs})`` as flat arrays, one row per applied event."""
        if not self.users:
            empty = np.zeros(0, np.float32)
            return np.array([], dtype=object), empty, dict.fromkeys(ARMS, empty)
        return (
            np.array(self.users, dtype=object),
            np.concatenate(self.labels),
            {arm: np.concatenate(p) for arm, p in self.preds.items()},
        )


def test_then_train(
    records: Sequence[tuple[Event, int]],
    model: LoadedModel,
    states: MutableMapping[str, UserState],
    params: HeadParams,
    band_z: float = DriftParams.user_z,
    catch_up: CatchUp | None = None,
) -> BatchResult:
    """Score then learn on ``records`` (``(event, offset)`` pairs in offset order per user). A user whose window
    CTR lies more than ``band_z`` sampling stds from ``p_g`` is drifting (``UserState.drift_since``).

    The batch is one gather-update-scatter: the events are grouped by user, every user's heads are stacked into
    one matrix per arm (gather), then scored, corrected and stepped in waves (:func:`_waves`): each user's events
    in order, all users of a wave at once (:func:`learn_rows`), so an event is scored after its user's earlier
    events in the batch were learned; then written back, one state write per user (scatter). The global arm is
    the model as it stands for the whole batch (it learns in the trainer), except with ``catch_up``: then each
    user's first-order weight is stepped after each of the user's events too (:class:`~.catch_up.UserSteps`, in
    ``result.user_steps`` for :meth:`CatchUp.learn <stream_ctr.learning.catch_up.CatchUp.learn>`), and the global
    arm, like the heads, scores a user's event after the user's earlier events in the batch were learned."""
    result = BatchResult()
    groups, cached = _fresh_by_user(records, states, result)
    if not groups:
        return result

    users = list(groups)
    ordered = [event for uid in users for event, _ in groups[uid]]  # each user's events contiguous
    counts = np.fromiter((len(groups[uid]) for uid in users), dtype=np.int64, count=len(users))
    bounds = np.cumsum(counts)
    y = np.fromiter((e.label for e in ordered), dtype=np.float32, count=len(ordered))
    g, h = model.forward(ordered)
    p_g = model.snapshot.global_ctr

    # Nothing below writes to a state until the scatter: a batch that raises part-way leaves every user as it was,
    # so the caller may retry its records (stream_ctr.learning.isolation) without learning any of them twice.
    user_states = [cached[uid] or UserState.new(params.window, model.rep_dim, tuple(FINE_TUNED)) for uid in users]
    heads = {arm: _gather(user_states, arm, model.rep_dim) for arm in FINE_TUNED}
    stacked = (np.stack([b for b, _ in heads.values()]), np.stack([w for _, w in heads.values()]))  # [A, U], [A, U, d]
    heads = {arm: (stacked[0][a], stacked[1][a]) for a, arm in enumerate(FINE_TUNED)}  # views of the stacks
    result.users = [e.user_id for e in ordered]
    result.events = ordered
    result.labels.append(y)
    steps = result.user_steps = None if catch_up is None else catch_up.user_steps(users)
    ctrs = [s.ctr.copy() for s in user_states]
    preds = {arm: np.empty(len(ordered), dtype=np.float32) for arm in ARMS}
    if steps is None:
        preds[CONTROL] = sigmoid(g)  # the global model does not learn here: scored as it stands
    methods = [params.correction if method == "lc" else method for method in FINE_TUNED.values()]  # lc: the variant
    for wave in _waves(counts):
        result.label_shift += _test_then_train_wave(
            wave, bounds - counts, y, (g, h), p_g, ctrs, stacked, preds, params, methods, steps
        )
    for arm in ARMS:
        result.preds[arm].append(preds[arm])
    p_u = np.fromiter((c.estimate(p_g, params.shrinkage) for c in ctrs), dtype=np.float64, count=len(users))

    _scatter(groups, user_states, ctrs, heads, model, states, band_z, result)
    for i, uid in enumerate(users):
        result.gaps[uid] = float(p_u[i]) - p_g
    return result


def _waves(counts: np.ndarray):
    """The users (indices) with a ``j``-th event in the batch, for ``j`` = 0, 1, ...: wave ``j`` scores and learns
    each such user's ``j``-th event, so every event is scored after its user's earlier events in the batch were
    learned, as one at a time would be, while the users of a wave are still one array operation."""
    for j in range(int(counts.max(initial=0))):
        yield j, np.flatnonzero(counts > j)


def _test_then_train_wave(
    wave,
    starts: np.ndarray,
    y: np.ndarray,
    global_out: tuple[np.ndarray, np.ndarray],
    p_g: float,
    ctrs: list,
    heads: tuple[np.ndarray, np.ndarray],
    preds: dict,
    params: HeadParams,
    methods: list[str],
    steps: UserSteps | None,
) -> float:
    """Score wave ``(j, users)`` with every head as it stands, then learn it: the users' rolling CTRs first, so
    ``p_u`` reflects the sample being fine-tuned on, then every arm's step on its (corrected) targets at once
    (``heads``: the fine-tuned arms' biases ``[A, U]`` and weights ``[A, U, d]``, ``methods``: their corrections,
    in :data:`FINE_TUNED` order), and the users' first-order ``steps`` if any. Writes the heads in ``heads`` and the
    CTRs in ``ctrs`` (copies: the batch's states change only at the scatter); returns the wave's label shift of the
    label-corrected arm."""
    j, who = wave
    at = starts[who] + j
    g, h = global_out
    for u, label in zip(who.tolist(), y[at].tolist()):
        ctrs[u].update(label)
    p_u = np.fromiter((ctrs[u].estimate(p_g, params.shrinkage) for u in who.tolist()), dtype=np.float64, count=len(who))
    seen = np.fromiter((ctrs[u].window_n for u in who.tolist()), dtype=np.float64, count=len(who))
    ga, ha, ya = g[at], h[at], y[at]
    if steps is not None:  # the global model as it stands after the users' earlier events in the batch
        ga = ga + steps.logit(who)
        preds[CONTROL][at] = sigmoid(ga)
    b, w = heads
    bw, ww = b[:, who], w[:, who]
    logit = ga + bw + np.einsum("nd,and->an", ha, ww)
    for arm, probs in zip(FINE_TUNED, sigmoid(logit)):
        preds[arm][at] = probs
    targets = [correct(ya, p_u, p_g, method, seen) for method in methods]
    learn_wave(bw, ww, ga, ha, logit, targets, params.lr, params.l2, params.steps)
    b[:, who], w[:, who] = bw, ww
    shift = sum(float(np.abs(t.labels - ya).sum()) for t, method in zip(targets, methods) if method != "none")
    if steps is not None:
        steps.learn(who, preds[CONTROL][at], ya)
    return shift


def _scatter(
    groups: dict[str, list[tuple[Event, int]]],
    user_states: list[UserState],
    ctrs: list,
    heads: dict,
    model: LoadedModel,
    states: MutableMapping[str, UserState],
    band_z: float,
    result: BatchResult,
) -> None:
    """Write each user's learned heads, rolling CTR, last offset and drift back into its state, and the state into
    ``states``: one write per user per batch (one changelog record in Faust). The only step that changes a state."""
    p_g = model.snapshot.global_ctr
    scatter = {arm: (b.tolist(), w) for arm, (b, w) in heads.items()}
    for i, (uid, state, ctr) in enumerate(zip(groups, user_states, ctrs)):
        state.reanchor(model.version, model.rep_dim)
        state.ctr = ctr
        for arm, (b, w) in scatter.items():
            head = state.heads[arm]
            head.b, head.w = b[i], w[i].copy()  # a copy: a view would keep the batch's whole matrix alive
        state.last_offset = max(offset for _, offset in groups[uid])
        z = user_z(ctr.window_clicks, ctr.window_n, p_g)
        state.drifting(abs(z) > band_z, groups[uid][-1][0].ts)
        states[uid] = state
        result.z[uid] = z


def _fresh_by_user(
    records: Sequence[tuple[Event, int]], states: MutableMapping[str, UserState], result: BatchResult
) -> tuple[dict[str, list[tuple[Event, int]]], dict[str, UserState | None]]:
    """The records past each user's last applied offset, grouped by user in arrival order (redeliveries counted in
    ``result.duplicates``), and each user's state as read."""
    groups: dict[str, list[tuple[Event, int]]] = defaultdict(list)
    cached: dict[str, UserState | None] = {}
    for event, offset in records:
        uid = event.user_id
        if uid not in cached:
            cached[uid] = states.get(uid)
        state = cached[uid]
        if state is not None and offset <= state.last_offset:
            result.duplicates += 1
            continue
        groups[uid].append((event, offset))
    return groups, cached


def _gather(states: list[UserState], arm: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The users' heads of ``arm`` stacked: biases ``[U]`` and weights ``[U, dim]`` (float32). A head of another
    width (anchored to a model of another shape) gathers as a fresh one, zeros, as :meth:`UserState.reanchor`
    will make it."""
    fresh = [s.heads[arm] if len(s.heads[arm].w) == dim else None for s in states]
    b = np.fromiter((0.0 if hd is None else hd.b for hd in fresh), dtype=np.float32, count=len(states))
    zeros = np.zeros(dim, dtype=np.float32)
    return b, np.stack([zeros if hd is None else hd.w for hd in fresh]).astype(np.float32, copy=False)
