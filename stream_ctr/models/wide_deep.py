"""Wide & Deep (Cheng et al. 2016): a linear wide part plus an MLP over the concatenated embeddings."""

import torch
from torch import nn

from .base import EmbeddingModel, mlp


class WideDeep(EmbeddingModel):
    family = "wd"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.deep = mlp(cfg.slots * cfg.embed_dim, cfg.hidden)
        self.out = nn.Linear(cfg.hidden[-1], 1)

    @property
    def rep_dim(self) -> int:
        return self.cfg.hidden[-1]

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        rep = self.deep(self.embed(ids, vals).flatten(1))
        return self.bias + self.first_order(ids, vals).sum(1) + self.out(rep).squeeze(-1), rep
