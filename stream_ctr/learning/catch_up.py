"""Catch-up: the worker's copy of the global model learns the worker's own events until the trainer's updates cover
them (read-your-writes for the global model).

Why: the trainer's model reaches a worker through two Kafka hops, 40-100 samples after the events it learned at the
demo's rate, thousands at full rate; in process a model 32 samples behind already loses 0.01 AUC and 128 behind 0.03
(docs/BENCHMARKS.md#progressive-quality). In MovieLens a user rates dozens of films in a sitting, and a model that
learns the user's row only after the sitting scores the sitting blind. River learns each event before the next.

So the worker takes the trainer's step itself, on the events it has just scored: one sparse Adagrad step a batch
at the trainer's step size (``trainer_lr``), on the rows of the hashed tables those events use, with accumulators of
its own. Dense layers are not stepped here: they move slowly and come with every ``dense_every``-th delta.

Within a batch the worker scores every event with one model, and a batch (``STREAM_CTR_STEP_EVENTS``, 24 events
while the worker keeps up) is often one user's sitting. So the weight that carries a user's own click rate, the
first-order weight of the user id's row, is stepped event by event instead (:class:`UserSteps`: the loop scores
each user's events in order, :mod:`stream_ctr.learning.loop`), and the batch step leaves that row alone. A user's
later events in a batch are then scored by a global model that learned the user's earlier ones, as River's learner
does.

The model in use is always ``trainer's model + C``, where the correction ``C`` is the sum of the local steps whose
events the trainer's model has not learned yet. Each batch's local step is a :class:`_Record` (the rows, the step,
the ``ctr.events`` positions it learned); an update from the trainer whose offsets cover those positions retires
it (``C`` loses it: the trainer's own step of those events is in the update). When the trainer has caught up, the
model in use *is* the trainer's model, bit for bit. The records hold at most ``max_events`` events (the oldest is
retired early beyond that: the model in use then lacks the events between the trainer's position and the oldest
record, and its staleness counts them), so memory is bounded: the copy of the model, ``C`` and the accumulators
(three times the hashed tables: 1.2 MB each for the default 32,768 x (8 + 1) floats) and the records (measured on
MovieLens: 88 bytes an event in batches of 32, 31 in batches of 1,024; 5.8 MB for the default 65,536 events).

The worker (``agents/batch.py``), the scoring requests (``agents/serving.py``) and the in-process lockstep
(:mod:`stream_ctr.bench.lockstep`) all read :attr:`CatchUp.current`; the snapshot follower calls :meth:`rebase` on
every model it takes.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from stream_ctr.contracts.events import Event
from stream_ctr.models import CTRModel, embedding_tables
from stream_ctr.models.delta import Delta
from stream_ctr.models.snapshot import LoadedModel

__all__ = ["CatchUp", "UserSteps", "positions_of"]

_EPS = 1e-10  # torch.optim.Adagrad's default
#: The table of first-order weights (every family has it): its row of a user id carries the user's click rate.
_FIRST_ORDER = "linear.weight"


class UserSteps:
    """One batch's in-order steps of each user's first-order weight (the ``linear`` row of the user id): users
    ``i`` of the batch, their ``rows``, and Adagrad accumulators starting from the catch-up's. The loop adds
    :meth:`logit` to the global logit of the user's ``j``-th event and calls :meth:`learn` once it is scored;
    :meth:`CatchUp.learn` then writes the steps into the model."""

    def __init__(self, rows: np.ndarray, accum: np.ndarray, lr: float):
        self.rows, self.lr = rows, lr
        self.accum = accum.astype(np.float32)  # [U]
        self.delta = np.zeros(len(rows), dtype=np.float32)  # [U] the weight's change so far in this batch
        self.squares = np.zeros(len(rows), dtype=np.float32)  # [U] squared gradients added to the accumulators

    def logit(self, users: np.ndarray) -> np.ndarray:
        """What the steps so far add to the global logit of ``users``' next events (a first-order term, value 1)."""
        return self.delta[users]

    def learn(self, users: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
        """One Adagrad step per user of ``users`` on the event just scored ``probs`` (labels ``labels``)."""
        grad = (probs - labels).astype(np.float32)
        self.squares[users] += grad * grad
        self.accum[users] += grad * grad
        self.delta[users] -= self.lr * grad / (np.sqrt(self.accum[users]) + _EPS)


@dataclass
class _Record:
    """One batch's local step: ``positions`` (partition -> next offset after its newest event), ``events`` learned,
    and per table key the rows stepped and the step added to them (``[k]`` int64, ``[k, dim]``)."""

    positions: dict[int, int]
    events: int
    steps: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]

    def covered_by(self, offsets: Mapping[int, int]) -> bool:
        return all(offsets.get(p, 0) >= nxt for p, nxt in self.positions.items())


class CatchUp:
    """The model in use on a worker: the trainer's newest model (:meth:`rebase`) plus local steps on the events the
    worker has read since (:meth:`learn`). ``max_events`` bounds the local steps kept."""

    def __init__(self, lr: float, max_events: int):
        if max_events <= 0:
            raise ValueError("max_events must be positive (a worker without catch-up has no CatchUp)")
        self.lr, self.max_events = lr, max_events
        #: The model to score with: the trainer's plus the local steps it has not covered (None before the first).
        self.current: LoadedModel | None = None
        self._base: LoadedModel | None = None
        self._model: CTRModel | None = None
        self._correction: dict[str, torch.Tensor] = {}
        self._accum: dict[str, torch.Tensor] = {}
        self._records: deque[_Record] = deque()
        self._events = 0  # events in _records
        self._learned: dict[int, int] = {}  # partition -> next offset after the newest event stepped here
        self._gap: dict[int, int] = {}  # partition -> next offset of the newest record retired before it was covered
        self._learned_ts = 0.0

    @classmethod
    def from_settings(cls, settings) -> CatchUp | None:
        """The catch-up of ``settings`` (``catch_up_events``, ``trainer_lr``); None when off."""
        if not settings.catch_up_events:
            return None
        return cls(settings.trainer_lr, settings.catch_up_events)

    @property
    def held_events(self) -> int:
        """Events whose local steps are in the model in use and not yet in the trainer's."""
        return self._events

    def rebase(self, base: LoadedModel, delta: Delta | None = None) -> None:
        """The trainer's model is now ``base``: ``delta`` applied to the previous one (its rows and dense tensors
        are copied here, the correction added back on its rows), or a model of its own (None: a full snapshot,
        copied whole). Then every local step ``base`` covers is retired."""
        if delta is None or self._model is None or self._base is None or delta.base != self._base.version:
            self._rebuild(base)
        else:
            delta.apply_to(self._model)
            tables = embedding_tables(self._model)
            with torch.no_grad():
                for key, (ids, _) in delta.rows.items():
                    rows = torch.from_numpy(ids)
                    tables[key].weight.index_add_(0, rows, self._correction[key].index_select(0, rows))
        self._base = base
        self._retire(lambda record: record.covered_by(base.snapshot.offsets))
        self._publish()

    def _rebuild(self, base: LoadedModel) -> None:
        model = copy.deepcopy(base.model)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        tables = embedding_tables(model)
        shapes = {k: t.weight.shape for k, t in tables.items()}
        if {k: c.shape for k, c in self._correction.items()} != shapes:  # another model: nothing carries over
            self._correction = {k: torch.zeros(s) for k, s in shapes.items()}
            self._accum = {k: torch.zeros(s) for k, s in shapes.items()}
            self._records.clear()
            self._events = 0
            self._learned.clear()
            self._gap.clear()
        with torch.no_grad():
            for key, table in tables.items():
                table.sparse = True  # the local step's gradient holds the batch's rows only
                table.weight.add_(self._correction[key])
        self._model = model

    def user_steps(self, users: Sequence[str]) -> UserSteps | None:
        """In-order steps for the first-order weights of ``users`` in the next batch (None before a model, or for
        a model without the user id among its features)."""
        if self._base is None or not self._base.snapshot.spec.user_id:
            return None
        rows = self._base.encoder.user_rows(users)
        return UserSteps(rows, self._accum[_FIRST_ORDER][torch.from_numpy(rows), 0].numpy(), self.lr)

    def learn(self, events: Sequence[Event], positions: Mapping[int, int], users: UserSteps | None = None) -> None:
        """Take the trainer's step on ``events`` (scored, now learned by the worker; ``positions``: partition ->
        next offset after the newest of them), and write in ``users``' in-order steps of their first-order weights
        (the batch step leaves those rows alone)."""
        if self._model is None or self._base is None or not events:
            return
        ids, vals = self._base.encoder.encode_events(events)
        y = torch.tensor([e.label for e in events], dtype=torch.float32)
        own = None if users is None else torch.from_numpy(users.rows)
        steps = {
            key: [rows_step] for key, rows_step in self._step(torch.from_numpy(ids), torch.from_numpy(vals), y, own)
        }
        if users is not None and own is not None:
            steps[_FIRST_ORDER].append(self._add_user_steps(own, users))
        self._records.append(_Record(dict(positions), len(events), steps))
        self._events += len(events)
        for p, nxt in positions.items():
            self._learned[p] = max(nxt, self._learned.get(p, 0))
        self._learned_ts = max(self._learned_ts, max(e.ts for e in events))
        while self._events > self.max_events:  # bounded: the oldest step leaves before the trainer has it
            self._drop_oldest()
        self._publish()

    def _drop_oldest(self) -> None:
        oldest = self._records.popleft()
        for p, nxt in oldest.positions.items():
            self._gap[p] = max(nxt, self._gap.get(p, 0))
        self._take_out(oldest)

    def _add_user_steps(self, rows: torch.Tensor, users: UserSteps) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the in-order steps into the first-order table and its accumulators; the ``(rows, step)`` record."""
        assert self._model is not None
        step = torch.from_numpy(users.delta).unsqueeze(1)
        with torch.no_grad():
            self._accum[_FIRST_ORDER].index_add_(0, rows, torch.from_numpy(users.squares).unsqueeze(1))
            self._correction[_FIRST_ORDER].index_add_(0, rows, step)
            embedding_tables(self._model)[_FIRST_ORDER].weight.index_add_(0, rows, step)
        return rows, step

    def _step(self, ids: torch.Tensor, vals: torch.Tensor, y: torch.Tensor, own: torch.Tensor | None):
        """One sparse Adagrad step of the tables on a batch, but not of the first-order rows ``own`` (stepped in
        order by :class:`UserSteps`); yields ``(table key, (rows, step))``."""
        assert self._model is not None
        tables = embedding_tables(self._model)
        weights = [t.weight for t in tables.values()]
        for w in weights:
            w.requires_grad_(True)
        try:
            logit, _ = self._model(ids, vals)
            grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(logit, y), weights)
        finally:
            for w in weights:
                w.requires_grad_(False)
        with torch.no_grad():
            for (key, table), grad in zip(tables.items(), grads):
                grad = grad.coalesce()
                rows, g = grad.indices()[0], grad.values()
                if key == _FIRST_ORDER and own is not None:
                    g = g * ~torch.isin(rows, own).unsqueeze(1)
                accum = self._accum[key]
                accum.index_add_(0, rows, g * g)
                step = g.mul(-self.lr).div_(accum.index_select(0, rows).sqrt_().add_(_EPS))
                self._correction[key].index_add_(0, rows, step)
                table.weight.index_add_(0, rows, step)
                yield key, (rows, step)

    def _retire(self, done) -> None:
        """Take the local steps of the records ``done`` accepts out of the model in use and of the correction."""
        kept = deque(r for r in self._records if not done(r))
        if len(kept) == len(self._records):
            return
        for record in self._records:
            if done(record):
                self._take_out(record)
        self._records = kept
        if not kept:  # no local step left: the trainer's model exactly, without float residue
            assert self._model is not None and self._base is not None
            base = embedding_tables(self._base.model)
            with torch.no_grad():
                for key, table in embedding_tables(self._model).items():
                    table.weight.copy_(base[key].weight)
                    self._correction[key].zero_()

    def _take_out(self, record: _Record) -> None:
        """Subtract ``record``'s steps from the model in use and the correction."""
        assert self._model is not None
        tables = embedding_tables(self._model)
        self._events -= record.events
        with torch.no_grad():
            for key, parts in record.steps.items():
                for rows, step in parts:
                    self._correction[key].index_add_(0, rows, step, alpha=-1.0)
                    tables[key].weight.index_add_(0, rows, step, alpha=-1.0)

    def _publish(self) -> None:
        """:attr:`current`: the model with the trainer's version and counts, and the stream position it has learned
        (the trainer's, or past it on each partition whose events since are all stepped here)."""
        assert self._base is not None and self._model is not None
        snap = self._base.snapshot
        offsets = dict(snap.offsets)
        for p, nxt in self._learned.items():
            if self._gap.get(p, 0) <= offsets.get(p, 0):
                offsets[p] = max(nxt, offsets.get(p, 0))
        trained_ts = max(snap.trained_ts, self._learned_ts) if self._records else snap.trained_ts
        snap = replace(snap, offsets=offsets, trained_ts=trained_ts)
        self.current = LoadedModel(snap, self._model, self._base.encoder)


def positions_of(partitions: Sequence[int], offsets: Sequence[int]) -> dict[int, int]:
    """Partition -> next offset after the newest of ``offsets`` read from it (aligned sequences)."""
    out: dict[int, int] = {}
    for p, o in zip(partitions, offsets):
        out[p] = max(out.get(p, 0), int(o) + 1)
    return out
