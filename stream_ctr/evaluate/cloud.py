"""The cloud model: one torch CTR model trained with Adam on every user's cloud part, then frozen.

Training is seeded (initialisation via :func:`stream_ctr.models.build_model`, batch order via a torch generator),
so one seed gives one cloud model. The number of epochs is chosen by early stopping on the validation split's
logloss (at most ``max_epochs``, stop after ``patience`` epochs without improvement, keep the best weights): the
same cloud model then serves every mode, so this choice cannot favour one of them.
:func:`stream_ctr.models.infer` returns the frozen model's logit ``g`` and representation ``h`` for any events,
which is all a per-user head needs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stream_ctr.evaluate.config import CloudConfig
from stream_ctr.evaluate.split import SplitData
from stream_ctr.models import CTRModel, ModelConfig, build_model, train_step

__all__ = ["CloudConfig", "train_cloud"]


def train_cloud(data: SplitData, family: str, cfg: CloudConfig, seed: int) -> tuple[CTRModel, int]:
    """Train a ``family`` model on ``data``'s cloud part; returns (model in eval mode, epochs kept)."""
    mcfg = ModelConfig(family, data.spec.n_slots, data.spec.buckets, cfg.embed_dim, tuple(cfg.hidden))
    model = build_model(mcfg, seed=seed)
    idx = torch.from_numpy(data.cloud_idx)
    ids, vals = torch.from_numpy(data.ids), torch.from_numpy(data.vals)
    y = torch.from_numpy(data.labels)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    val = torch.from_numpy(np.concatenate(data.val)) if data.val else idx[:0]
    best, best_state, bad, best_epoch = float("inf"), None, 0, cfg.max_epochs
    for epoch in range(1, cfg.max_epochs + 1):
        perm = idx[torch.randperm(len(idx), generator=gen)]
        for lo in range(0, len(perm), cfg.batch):
            b = perm[lo : lo + cfg.batch]
            train_step(model, opt, ids[b], vals[b], y[b])
        if len(val) == 0:
            continue
        model.eval()
        with torch.no_grad():
            v = float(loss_fn(model(ids[val], vals[val])[0], y[val]))
        if v < best - 1e-5:
            best, bad, best_epoch = v, 0, epoch
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, best_epoch
