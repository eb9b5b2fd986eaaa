"""Wide & Deep (Cheng et al. 2016): a linear wide part plus an MLP over the concatenated embeddings."""

import torch

from stream_ctr.models.base import DeepModel


class WideDeep(DeepModel):
    family = "wd"

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        rep = self.deep(self.embed(ids, vals).flatten(1))
        return self.bias + self.first_order(ids, vals).sum(1) + self.out(rep).squeeze(-1), rep
