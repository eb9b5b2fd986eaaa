"""Model snapshots: what the trainer publishes to ``ctr.model`` and every scorer swaps to atomically.

Wire format: ``b"SCTR1"``, a 4-byte header length, an orjson header (version, family, model config, feature
spec, global CTR, samples seen, the ``ctr.events`` position per partition the weights have trained up to, publish
time, the newest event time learned) and the ``torch.save`` bytes of the state dict. Between full snapshots the
model moves by :class:`~stream_ctr.models.delta.Delta` (:meth:`LoadedModel.advanced`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import orjson
import torch

from stream_ctr.contracts.features import FeatureSpec, HashingEncoder
from stream_ctr.models import CTRModel, ModelConfig, build_model, infer
from stream_ctr.models.delta import Delta, is_delta

__all__ = ["LoadedModel", "ModelSource", "Snapshot", "SnapshotHolder", "decode_update"]

_MAGIC = b"SCTR1"


@dataclass(frozen=True)
class Snapshot:
    version: int
    model_cfg: ModelConfig
    spec: FeatureSpec
    global_ctr: float
    samples: int
    state_dict: dict = field(repr=False, compare=False)
    #: Next offset to train on, per partition of ``ctr.events``: a resuming trainer starts exactly here.
    offsets: dict[int, int] = field(default_factory=dict)
    #: Trainer's wall clock at publication (seconds since the epoch); 0 for one never published.
    published_at: float = 0.0
    #: Event time (``ts``) of the newest event the weights have learned; 0 before any (and in older records).
    trained_ts: float = 0.0

    @property
    def family(self) -> str:
        return self.model_cfg.family

    def to_bytes(self) -> bytes:
        header = orjson.dumps(
            {
                "version": self.version,
                "model": self.model_cfg.to_dict(),
                "features": self.spec.to_dict(),
                "global_ctr": self.global_ctr,
                "samples": self.samples,
                "offsets": {str(p): o for p, o in self.offsets.items()},
                "published_at": self.published_at,
                "trained_ts": self.trained_ts,
            }
        )
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.state_dict.items()}, buf)
        return _MAGIC + struct.pack("<I", len(header)) + header + buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        if not data.startswith(_MAGIC):
            raise ValueError("not a stream-ctr model snapshot")
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        h = orjson.loads(data[start : start + n])
        weights = torch.load(io.BytesIO(data[start + n :]), weights_only=True)
        return cls(
            h["version"],
            ModelConfig.from_dict(h["model"]),
            FeatureSpec.from_dict(h["features"]),
            float(h["global_ctr"]),
            int(h["samples"]),
            weights,
            {int(p): int(o) for p, o in h.get("offsets", {}).items()},
            float(h.get("published_at", 0.0)),
            float(h.get("trained_ts", 0.0)),
        )

    def build(self) -> LoadedModel:
        model = build_model(self.model_cfg)
        model.load_state_dict(self.state_dict)
        model.eval()
        return LoadedModel(self, model, HashingEncoder(self.spec))


def decode_update(data: bytes) -> Snapshot | Delta:
    """A record of the model's update chain: a :class:`~stream_ctr.models.delta.Delta` or a full :class:`Snapshot`."""
    return Delta.from_bytes(data) if is_delta(data) else Snapshot.from_bytes(data)


@dataclass(frozen=True)
class LoadedModel:
    """A snapshot ready to score: the model in eval mode and its encoder. Immutable, so swapping is atomic."""

    snapshot: Snapshot
    model: CTRModel
    encoder: HashingEncoder

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def rep_dim(self) -> int:
        return self.model.rep_dim

    def advanced(self, delta: Delta) -> LoadedModel:
        """This model moved to ``delta``'s version, which must be based on this one. The weights change in place
        (a few rows: cheap enough for the event loop, where no scoring runs concurrently); the returned object
        carries the new version and counts."""
        if delta.base != self.version:
            raise ValueError(f"delta v{delta.version} is based on v{delta.base}, not on v{self.version}")
        delta.apply_to(self.model)
        snapshot = replace(
            self.snapshot,
            version=delta.version,
            global_ctr=delta.global_ctr,
            samples=delta.samples,
            offsets=dict(delta.offsets),
            published_at=delta.published_at,
            trained_ts=delta.trained_ts,
            state_dict=self.model.state_dict(),
        )
        return LoadedModel(snapshot, self.model, self.encoder)

    def forward(self, events) -> tuple[np.ndarray, np.ndarray]:
        """Global logits ``[n]`` and representations ``[n, rep_dim]`` for a list of events, as numpy."""
        return infer(self.model, *self.encoder.encode_events(events))

    def forward_rows(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`forward` for ``(user_id, item_id, features)`` rows (scoring candidates, not events)."""
        return infer(self.model, *self.encoder.encode(rows))


class ModelSource(Protocol):
    """Where a scorer takes the model in use: once per batch (or request), kept for all of it."""

    @property
    def current(self) -> LoadedModel | None: ...


class SnapshotHolder:
    """Holds the current :class:`LoadedModel`; readers take ``.current`` once per batch (or request) and keep it.
    ``listeners`` are told of every model it takes: ``(model, the delta that made it or None for a whole one)``."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self.listeners: list[Callable[[LoadedModel, Delta | None], None]] = []

    def is_newer(self, version: int) -> bool:
        return self.current is None or version > self.current.version

    def swap(self, loaded: LoadedModel) -> bool:
        """Make ``loaded`` current if it is newer; returns whether it was taken. A reference assignment: atomic."""
        if not self.is_newer(loaded.version):
            return False
        self.current = loaded
        for listener in self.listeners:
            listener(loaded, None)
        return True

    def advance(self, delta: Delta) -> None:
        """Move the current model by ``delta`` (based on its version: :meth:`LoadedModel.advanced`)."""
        if self.current is None:
            raise ValueError(f"delta v{delta.version} arrived before any model")
        self.current = self.current.advanced(delta)
        for listener in self.listeners:
            listener(self.current, delta)

    def offer(self, snapshot: Snapshot) -> bool:
        """Build ``snapshot`` and swap to it if it is newer."""
        return self.is_newer(snapshot.version) and self.swap(snapshot.build())
