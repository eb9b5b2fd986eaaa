"""What every CTR model family shares: the hashed embedding, an MLP builder, and the output contract.

A model maps ``(ids, vals)`` of shape ``[n, slots]`` (see :mod:`stream_ctr.contracts.features`) to ``(logit, rep)``:
``logit`` ``[n]`` is the global model's score and ``rep`` ``[n, rep_dim]`` is the representation a per-user head
reads. Heads never see the raw features, so they stay small and survive a backbone update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CTRModel", "DeepModel", "EmbeddingModel", "ModelConfig", "embedding_tables", "infer", "mlp", "train_step"]


@dataclass(frozen=True)
class ModelConfig:
    family: str
    slots: int
    buckets: int
    embed_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
    cross_layers: int = 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "hidden": tuple(d["hidden"])})


def mlp(n_in: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    return nn.Sequential(*layers)


class CTRModel(nn.Module):
    """Base class: owns the embedding tables; subclasses define ``rep_dim`` and ``forward``."""

    family = "base"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.bias = nn.Parameter(torch.zeros(1))
        self.linear = nn.Embedding(cfg.buckets, 1)
        nn.init.zeros_(self.linear.weight)

    @property
    def rep_dim(self) -> int:
        raise NotImplementedError

    def first_order(self, ids: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Per-slot linear terms ``w[id] * val``, shape ``[n, slots]``."""
        return self.linear(ids).squeeze(-1) * vals

    def forward(self, ids: torch.Tensor, vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class EmbeddingModel(CTRModel):
    """A model with a second-order embedding table ``v`` (every family but LR)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.embedding = nn.Embedding(cfg.buckets, cfg.embed_dim)
        nn.init.normal_(self.embedding.weight, std=0.01)

    def embed(self, ids: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Value-weighted slot embeddings, shape ``[n, slots, dim]``."""
        return self.embedding(ids) * vals.unsqueeze(-1)


class DeepModel(EmbeddingModel):
    """An embedding model with an MLP over the flattened slot embeddings; its last hidden layer is the
    representation and ``out`` maps it to a logit term."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.deep = mlp(cfg.slots * cfg.embed_dim, cfg.hidden)
        self.out = nn.Linear(cfg.hidden[-1], 1)

    @property
    def rep_dim(self) -> int:
        return self.cfg.hidden[-1]


def embedding_tables(model: nn.Module) -> dict[str, nn.Embedding]:
    """The model's hashed tables by state-dict key (``"linear.weight"``, ``"embedding.weight"``): the sparse part,
    of which a step changes only the rows its batch used. Every other tensor is dense."""
    return {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Embedding)}


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """The FM pairwise-interaction vector ``0.5 * ((sum v)^2 - sum v^2)``, shape ``[n, dim]``."""
    return 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1))


def train_step(
    model: CTRModel, optimizer: torch.optim.Optimizer, ids: torch.Tensor, vals: torch.Tensor, labels: torch.Tensor
) -> float:
    """One optimiser step of binary cross-entropy on a mini-batch; returns the batch loss. The global trainer
    and the offline cloud model both train through this."""
    model.train()
    logit, _ = model(ids, vals)
    loss = F.binary_cross_entropy_with_logits(logit, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def infer(model: CTRModel, ids: np.ndarray, vals: np.ndarray, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """``(g, h)`` as float32 numpy: the model's logits ``[n]`` and representations ``[n, rep_dim]``, in eval mode,
    in batches of ``batch`` rows, on whatever device the model lives on. Serving calls it per request batch, so
    the common case (one batch, a model already in eval mode) costs no copy and no walk over the modules."""
    if model.training:
        model.eval()
    device = model.bias.device
    gs, hs = [], []
    for lo in range(0, len(ids), batch):
        g, h = model(
            torch.from_numpy(ids[lo : lo + batch]).to(device), torch.from_numpy(vals[lo : lo + batch]).to(device)
        )
        gs.append(g.float().cpu().numpy())
        hs.append(h.float().cpu().numpy())
    if not gs:
        return np.zeros(0, np.float32), np.zeros((0, model.rep_dim), np.float32)
    if len(gs) == 1:
        return gs[0], hs[0]
    return np.concatenate(gs), np.concatenate(hs)
