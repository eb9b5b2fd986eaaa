"""DCN-v2 (Wang et al. 2021), stacked: full-rank cross layers, then an MLP whose last layer is the representation."""

import torch
from torch import nn

from stream_ctr.models.base import DeepModel


class CrossLayer(nn.Module):
    """``x_{l+1} = x_0 * (W x_l + b) + x_l``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.proj(x) + x


class DCNv2(DeepModel):
    family = "dcn"

    def __init__(self, cfg):
        super().__init__(cfg)
        width = cfg.slots * cfg.embed_dim
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cfg.cross_layers))

    def forward(self, ids: torch.Tensor, vals: torch.Tensor):
        x0 = x = self.embed(ids, vals).flatten(1)
        for layer in self.cross:
            x = layer(x0, x)
        rep = self.deep(x)
        return self.bias + self.first_order(ids, vals).sum(1) + self.out(rep).squeeze(-1), rep
