"""The global model's trainer: mini-batch torch training on the merged stream, a model delta every K samples (or
every ``delta_interval_s``) and a full snapshot every ``full_snapshot_every`` deltas.

Kafka-free: the Faust trainer agent feeds it batches of events and publishes what :meth:`maybe_delta` and
:meth:`snapshot` return. The global CTR it publishes is the lifetime click share of everything it has trained on.
In a group of ranks (:mod:`stream_ctr.trainer.distributed`) each rank's trainer takes its part of every step through
:meth:`learn_round`, and every rank holds the same weights, counts and stream position.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from stream_ctr.config import Settings
from stream_ctr.contracts.features import FeatureSpec, HashingEncoder
from stream_ctr.learning.heads import sigmoid
from stream_ctr.learning.isolation import FATAL, isolate
from stream_ctr.models import ModelConfig, build_model, embedding_tables, infer, train_step
from stream_ctr.models.delta import Delta
from stream_ctr.models.snapshot import Snapshot
from stream_ctr.trainer.distributed import Group, Position

__all__ = ["GlobalTrainer", "model_config", "feature_spec"]


def feature_spec(settings: Settings) -> FeatureSpec:
    return FeatureSpec.parse(settings.features, settings.hash_buckets)


def model_config(settings: Settings, spec: FeatureSpec, family: str | None = None) -> ModelConfig:
    return ModelConfig(
        family or settings.model_family, spec.n_slots, spec.buckets, settings.embed_dim, settings.hidden_sizes
    )


class GlobalTrainer:
    def __init__(self, settings: Settings, group: Group | None = None):
        self.settings = settings
        self.group = group
        self.spec = feature_spec(settings)
        self.cfg = model_config(settings, self.spec)
        self.device = torch.device(settings.device)
        self.model = build_model(self.cfg, seed=settings.seed).to(self.device)
        optimizer = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[settings.trainer_optimizer]
        #: Whether a step changes only the rows its batch used (Adagrad). Adam's momentum moves every row it ever
        #: touched on every step, so its deltas must carry whole tables.
        self.sparse = settings.trainer_optimizer == "adagrad"
        if self.sparse:
            # Adagrad builds its sparse tensors from autograd's own gradients: validating them would cost a step.
            torch.sparse.check_sparse_tensor_invariants.disable()
            for table in embedding_tables(self.model).values():
                table.sparse = True  # a step reads and writes only the rows its batch used, not all 32,768
        self.optimizer = optimizer(self.model.parameters(), lr=settings.trainer_lr)
        self.encoder = HashingEncoder(self.spec)
        self.samples = 0
        self.clicks = 0
        self.version = 0
        self._pending = 0
        self._touched: list[np.ndarray] = []  # table rows used since the last delta (bounded by delta_every)
        self._last_delta = time.monotonic()
        self._deltas_since_dense = 0
        self._deltas_since_full = 0
        self.last_loss = float("nan")
        self.last_batch = settings.trainer_batch  # the mini-batch size of the last learn_many
        self.trained_ts = 0.0  # event time of the newest event learned
        #: Next offset per partition of ``ctr.events`` (what the weights have seen); published in snapshots.
        self.offsets: dict[int, int] = {}
        #: In a group, the end offset of every partition as of the last step (:meth:`learn_round`).
        self.ends: dict[int, int] = {}
        self._tables = list(embedding_tables(self.model))

    @property
    def global_ctr(self) -> float:
        # Before any data, 0.5 is the least committal prior.
        return self.clicks / self.samples if self.samples else 0.5

    @property
    def pending(self) -> int:
        """Samples trained on since the last delta."""
        return self._pending

    @property
    def deltas_since_full(self) -> int:
        return self._deltas_since_full

    @property
    def full_due(self) -> bool:
        """Whether ``full_snapshot_every`` deltas went out since the last full snapshot."""
        return self._deltas_since_full >= self.settings.full_snapshot_every

    def resume_from(self, snapshot: Snapshot, newest_version: int | None = None) -> None:
        """Continue from a published full snapshot (weights, counts, stream position); the optimiser state starts
        afresh. Deltas published after it (up to ``newest_version``, the newest one any scorer may hold) are
        dropped, their samples to be trained again: the version then jumps past them, and a full snapshot at it
        supersedes them all."""
        self.model.load_state_dict(snapshot.state_dict)
        self.offsets = dict(snapshot.offsets)
        if newest_version is not None and newest_version > snapshot.version:
            self.version = newest_version + 1
        else:
            self.version = snapshot.version
        self.samples = snapshot.samples
        self.clicks = round(snapshot.global_ctr * snapshot.samples)
        self.trained_ts = snapshot.trained_ts
        self._pending = 0
        self._touched.clear()

    def _in_group(self) -> Group:
        """The group of ranks this trainer steps with: :meth:`sync_group` and :meth:`learn_round` need one."""
        if self.group is None:
            raise RuntimeError("this trainer is not in a group of ranks")
        return self.group

    def sync_group(self) -> None:
        """Take rank 0's weights, counts, version and stream position (after rank 0 resumed or started afresh)."""
        meta = self._in_group().broadcast_model(
            self.model,
            {
                "offsets": self.offsets,
                "samples": self.samples,
                "clicks": self.clicks,
                "version": self.version,
                "trained_ts": self.trained_ts,
            },
        )
        self.offsets, self.samples, self.clicks = dict(meta["offsets"]), meta["samples"], meta["clicks"]
        self.version, self.trained_ts = meta["version"], meta["trained_ts"]
        self._pending = 0
        self._touched.clear()

    def batch_for(self, backlog: int) -> int:
        """The mini-batch size for ``backlog`` samples waiting: ``trainer_batch`` while the trainer keeps up, then
        doubling with the backlog (a sixteenth of it, rounded down to a power of two times the base) up to
        ``trainer_batch_max``. A trainer that falls behind takes bigger steps and so fewer of them, and catches
        up; a trainer that keeps up learns in small steps. The step size stays ``trainer_lr``: Adagrad divides each
        coordinate's step by its own gradient history, so a mean over more samples moves the weights about as far
        as a mean over fewer (measured on ML-100K, docs/results/trainer-batch.md: batch 64 as good as 8)."""
        base, cap = self.settings.trainer_batch, self.settings.trainer_batch_max
        size = base
        while size * 2 <= cap and size * 2 * 16 <= backlog:
            size *= 2
        return min(size, cap)

    def learn_many(self, events: Sequence, backlog: int | None = None) -> list[tuple[object, Exception]]:
        """One optimiser step per mini-batch of ``events``, of :meth:`batch_for` ``backlog`` samples (the samples
        waiting, these included; None: the base ``trainer_batch``). A mini-batch whose step raises is retried in parts
        (:func:`~stream_ctr.learning.isolation.isolate`): the events that raise alone are returned with their
        exceptions, not learned, and every other event is learned once."""
        step = self.batch_for(backlog or 0)
        self.last_batch = step
        failed: list[tuple[object, Exception]] = []
        for lo in range(0, len(events), step):
            failed += isolate(events[lo : lo + step], self._step)
        return failed

    def learn_round(
        self, events: Sequence, positions: dict[int, int], ends: dict[int, int]
    ) -> list[tuple[object, Exception]]:
        """This rank's part of one step of the group: ``events`` (possibly none) learned together with the other
        ranks' parts, ``positions`` (partition -> next offset) the records read for them, ``ends`` the end offset
        of this rank's partitions. Every rank leaves with the group's weights, counts and offsets (and the group's
        end offsets in :attr:`ends`). Events that cannot be encoded are returned with their exceptions."""
        events, (ids, vals), failed = self._encode(events)
        y = torch.tensor([e.label for e in events], dtype=torch.float32, device=self.device)
        self.advance(positions)
        here = Position(self.offsets, ends, max((e.ts for e in events), default=self.trained_ts))
        group = self._in_group()
        step = group.step(
            self.model,
            self.optimizer,
            torch.from_numpy(ids).to(self.device),
            torch.from_numpy(vals).to(self.device),
            y,
            self._tables,
            here,
            self.settings.events_partitions,
        )
        self.offsets, self.ends = step.position.offsets, step.position.ends
        self.trained_ts = max(self.trained_ts, step.position.trained_ts)
        if step.samples:
            self.last_loss = step.loss
            self.last_batch = step.samples
            if group.publishes:  # only rank 0 makes deltas
                self._touched.append(step.rows.cpu().numpy())
            self.samples += step.samples
            self.clicks += step.clicks
            self._pending += step.samples
        return failed

    def _encode(self, events: Sequence):
        """``(events that encode, their (ids, vals), [(event, exception)] for those that do not)``."""
        try:
            return events, self.encoder.encode_events(events), []
        except FATAL:
            raise
        except Exception:
            failed = isolate(events, self.encoder.encode_events)
            bad = {id(e) for e, _ in failed}
            events = [e for e in events if id(e) not in bad]
            return events, self.encoder.encode_events(events), failed

    def _step(self, chunk: Sequence) -> None:
        """One optimiser step on ``chunk``; raises before changing anything, or not at all."""
        ids, vals = self.encoder.encode_events(chunk)
        y = torch.tensor([e.label for e in chunk], dtype=torch.float32, device=self.device)
        self.last_loss = train_step(
            self.model, self.optimizer, torch.from_numpy(ids).to(self.device), torch.from_numpy(vals).to(self.device), y
        )
        self._touched.append(ids.ravel())
        self.samples += len(chunk)
        self.clicks += int(y.sum().item())
        self.trained_ts = max(self.trained_ts, max(e.ts for e in chunk))
        self._pending += len(chunk)

    def advance(self, positions) -> None:
        """Record that the records before ``positions`` (partition -> next offset) have been learned or skipped."""
        for partition, offset in positions.items():
            self.offsets[partition] = max(offset, self.offsets.get(partition, 0))

    def snapshot(self) -> Snapshot:
        """A full snapshot of the current weights: under the newest delta's version if nothing was learned since,
        else under a version of its own (a version is one set of weights)."""
        if self._pending:
            self.version += 1
            self._touched.clear()
            self._pending = 0
        self._deltas_since_full = 0
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return Snapshot(
            self.version,
            self.cfg,
            self.spec,
            float(self.global_ctr),
            self.samples,
            state,
            dict(self.offsets),
            time.time(),
            self.trained_ts,
        )

    def maybe_delta(self, now: float | None = None) -> Delta | None:
        """The next delta once ``delta_every`` samples are pending, or once any are and ``delta_interval_s``
        passed since the last delta at monotonic time ``now`` (None: count samples only, as the quality bench)."""
        due = self._pending >= self.settings.delta_every or (
            now is not None and self._pending > 0 and now - self._last_delta >= self.settings.delta_interval_s
        )
        return self.next_delta() if due else None

    def next_delta(self) -> Delta:
        """Version + 1: the rows trained since the previous version, and the dense layers every ``dense_every``."""
        if not self.sparse:
            rows = np.arange(self.cfg.buckets)
        else:
            rows = np.unique(np.concatenate(self._touched)) if self._touched else np.zeros(0, np.int64)
        self._touched.clear()
        self._pending = 0
        self._last_delta = time.monotonic()
        self._deltas_since_dense += 1
        self._deltas_since_full += 1
        with_dense = self._deltas_since_dense >= self.settings.dense_every
        if with_dense:
            self._deltas_since_dense = 0
        self.version += 1
        return Delta.of(
            self.model,
            rows[rows > 0],
            with_dense,
            version=self.version,
            base=self.version - 1,
            global_ctr=float(self.global_ctr),
            samples=self.samples,
            offsets=dict(self.offsets),
            published_at=time.time(),
            trained_ts=self.trained_ts,
        )

    def predict_proba(self, events) -> np.ndarray:
        """Click probabilities of the current weights for ``events`` (what a snapshot taken now would score)."""
        g, _ = infer(self.model, *self.encoder.encode_events(events))
        return sigmoid(g)
