"""Factorisation machine (Rendle 2010); its representation is the pairwise-interaction vector."""

import torch

from stream_ctr.models.base import EmbeddingModel, fm_interaction


class FM(EmbeddingModel):
    family = "fm"

    @property
    def rep_dim(self) -> int:
        return self.cfg.embed_dim

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        inter = fm_interaction(self.embed(ids, vals))
        return self.bias + self.first_order(ids, vals).sum(1) + inter.sum(1), inter
