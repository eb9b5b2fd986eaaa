"""Logistic regression over hashed features; its representation is the per-slot linear terms."""

import torch

from stream_ctr.models.base import CTRModel


class LogisticRegression(CTRModel):
    family = "lr"

    @property
    def rep_dim(self) -> int:
        return self.cfg.slots

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        terms = self.first_order(ids, vals)
        return self.bias + terms.sum(1), terms
