"""DeepFM (Guo et al. 2017): linear + FM + MLP sharing one embedding table."""

import torch

from stream_ctr.models.base import DeepModel, fm_interaction


class DeepFM(DeepModel):
    family = "deepfm"

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        v = self.embed(ids, vals)
        rep = self.deep(v.flatten(1))
        logit = self.bias + self.first_order(ids, vals).sum(1) + fm_interaction(v).sum(1) + self.out(rep).squeeze(-1)
        return logit, rep
