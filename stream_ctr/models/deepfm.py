"""DeepFM (Guo et al. 2017): linear + FM + MLP sharing one embedding table."""

import torch
from torch import nn

from .base import EmbeddingModel, fm_interaction, mlp


class DeepFM(EmbeddingModel):
    family = "deepfm"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.deep = mlp(cfg.slots * cfg.embed_dim, cfg.hidden)
        self.out = nn.Linear(cfg.hidden[-1], 1)

    @property
    def rep_dim(self) -> int:
        return self.cfg.hidden[-1]

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        v = self.embed(ids, vals)
        rep = self.deep(v.flatten(1))
        logit = self.bias + self.first_order(ids, vals).sum(1) + fm_interaction(v).sum(1) + self.out(rep).squeeze(-1)
        return logit, rep
