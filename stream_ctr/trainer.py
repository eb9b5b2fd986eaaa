"""The global model's trainer: mini-batch torch training on the merged stream, snapshots every K samples.

Kafka-free: the Faust trainer agent feeds it batches of events and publishes what :meth:`maybe_snapshot`
returns. The global CTR it publishes is the lifetime click share of everything it has trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import Settings
from .features import FeatureSpec, HashingEncoder
from .heads import sigmoid
from .models import ModelConfig, build_model, infer, train_step
from .snapshot import Snapshot

__all__ = ["GlobalTrainer", "model_config", "feature_spec"]


def feature_spec(settings: Settings) -> FeatureSpec:
    return FeatureSpec.parse(settings.features, settings.hash_buckets)


def model_config(settings: Settings, spec: FeatureSpec, family: str | None = None) -> ModelConfig:
    return ModelConfig(family or settings.model_family, spec.n_slots, spec.buckets, settings.embed_dim,
                       settings.hidden_sizes)


class GlobalTrainer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.spec = feature_spec(settings)
        self.cfg = model_config(settings, self.spec)
        self.device = torch.device(settings.device)
        self.model = build_model(self.cfg, seed=settings.seed).to(self.device)
        optimizer = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[settings.trainer_optimizer]
        self.optimizer = optimizer(self.model.parameters(), lr=settings.trainer_lr)
        self.encoder = HashingEncoder(self.spec)
        self.samples = 0
        self.clicks = 0
        self.version = 0
        self._since_snapshot = 0
        self.last_loss = float("nan")
        #: Next offset per partition of ``ctr.events`` (what the weights have seen); published in snapshots.
        self.offsets: dict[int, int] = {}

    @property
    def global_ctr(self) -> float:
        # Before any data, 0.5 is the least committal prior.
        return self.clicks / self.samples if self.samples else 0.5

    @property
    def pending(self) -> int:
        """Samples trained on since the last snapshot."""
        return self._since_snapshot

    def resume_from(self, snapshot: Snapshot) -> None:
        """Continue from a published snapshot (weights, version, counts, stream position); the optimiser state
        starts afresh."""
        self.model.load_state_dict(snapshot.state_dict)
        self.offsets = dict(snapshot.offsets)
        self.version = snapshot.version
        self.samples = snapshot.samples
        self.clicks = round(snapshot.global_ctr * snapshot.samples)
        self._since_snapshot = 0

    def learn_many(self, events) -> None:
        """One optimiser step per ``trainer_batch`` slice of ``events``."""
        step = self.settings.trainer_batch
        for lo in range(0, len(events), step):
            chunk = events[lo: lo + step]
            ids, vals = self.encoder.encode_events(chunk)
            y = torch.tensor([e.label for e in chunk], dtype=torch.float32, device=self.device)
            self.last_loss = train_step(self.model, self.optimizer, torch.from_numpy(ids).to(self.device),
                                        torch.from_numpy(vals).to(self.device), y)
            self.samples += len(chunk)
            self.clicks += int(y.sum().item())
            self._since_snapshot += len(chunk)

    def advance(self, positions) -> None:
        """Record that the records before ``positions`` (partition -> next offset) have been learned or skipped."""
        for partition, offset in positions.items():
            self.offsets[partition] = max(offset, self.offsets.get(partition, 0))

    def snapshot(self) -> Snapshot:
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return Snapshot(self.version, self.cfg, self.spec, float(self.global_ctr), self.samples, state,
                        dict(self.offsets))

    def maybe_snapshot(self) -> Snapshot | None:
        """A new snapshot (version + 1) once ``snapshot_every`` samples have arrived since the last one."""
        if self._since_snapshot < self.settings.snapshot_every:
            return None
        return self.next_snapshot()

    def next_snapshot(self) -> Snapshot:
        """Publish-ready snapshot of the current weights under the next version number."""
        self._since_snapshot = 0
        self.version += 1
        return self.snapshot()

    def predict_proba(self, events) -> np.ndarray:
        """Click probabilities of the current weights for ``events`` (what a snapshot taken now would score)."""
        g, _ = infer(self.model, *self.encoder.encode_events(events))
        return sigmoid(g)
