"""The global model trained from per-user submodel updates instead of pooled samples: FedAvg and
FedSubAvg, offline, as ``stream-ctr evaluate --global-training fedavg|fedsubavg``.

Every user with events in the cloud part is a client holding those events. A round samples ``clients`` of them
(seeded); each starts from the global weights and trains its *submodel* (the embedding rows of the features in its
own data, plus the dense parts) with ``local_epochs`` of mini-batch SGD on its own events, and sends the change of
those rows and of the dense tensors. The server adds the aggregated change:

* ``fedavg`` (McMahan et al. 2017): each parameter's change is the mean over *all* the round's clients, weighted by
  their event counts; a client that does not hold a row counts as a zero change for it, so a row few clients hold
  (a rare feature, a user's own id) moves by a fraction of what its holders learned;
* ``fedsubavg`` (Ding et al., "Federated Submodel Optimization for Hot and Cold Data Features", NeurIPS 2022):
  each parameter's change is the mean over the clients that *hold* it (same weights); the dense tensors, which
  every client holds, are averaged exactly as FedAvg does, so the two differ only on sparse rows.

Every ``eval_every`` rounds the global model's logloss on the validation split is checked and the best weights are
kept (the centralized model's early stopping, in rounds). Raw events never leave a client; only row changes do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stream_ctr.evaluate.config import GLOBAL_TRAINING, CloudConfig
from stream_ctr.evaluate.split import SplitData
from stream_ctr.models import CTRModel, ModelConfig, build_model

__all__ = ["FederatedConfig", "aggregate", "train_federated"]


@dataclass(frozen=True)
class FederatedConfig:
    rounds: int = 150
    clients: int = 50
    local_epochs: int = 2
    local_batch: int = 32
    lr: float = 1.0
    eval_every: int = 10


def aggregate(how: str, changes: list[dict], weights: np.ndarray, tables: set[str], shapes: dict) -> dict:
    """The server's change of every parameter from the clients' ``changes``: ``{name: (rows, delta)}`` for a
    table (the rows the client holds and their change), ``{name: delta}`` for a dense tensor. ``fedavg`` divides
    each parameter's weighted sum by the weight of all clients, ``fedsubavg`` by the weight of the clients that
    hold it (dense tensors: all of them)."""
    if how not in ("fedavg", "fedsubavg"):
        raise ValueError(f"unknown aggregation {how!r}")
    total = float(np.sum(weights))
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        acc = torch.zeros(shape)
        if name not in tables:
            for c, w in zip(changes, weights):
                acc += float(w) * c[name]
            out[name] = acc / total
            continue
        held = torch.zeros(shape[0])
        for c, w in zip(changes, weights):
            rows, delta = c[name]
            acc[rows] += float(w) * delta
            held[rows] += float(w)
        denom = held.clamp(min=1e-12) if how == "fedsubavg" else torch.full_like(held, total)
        out[name] = acc / denom.unsqueeze(-1)
    return out


class _Client:
    """Trains a submodel on one client's events in a shared working model, and returns the change it made."""

    def __init__(self, model: CTRModel, data: SplitData, fed: FederatedConfig):
        self.model, self.fed = model, fed
        self.named = dict(model.named_parameters())
        self.tables = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
        self.ids, self.vals, self.y = map(torch.from_numpy, (data.ids, data.vals, data.labels))

    def update(self, idx: np.ndarray, rng: np.random.Generator) -> dict:
        rows = torch.unique(self.ids[torch.from_numpy(idx)])
        start = {n: (p[rows] if n in self.tables else p).detach().clone() for n, p in self.named.items()}
        names, params = list(self.named), list(self.named.values())
        for _ in range(self.fed.local_epochs):
            order = idx[rng.permutation(len(idx))]
            for lo in range(0, len(order), self.fed.local_batch):
                b = torch.from_numpy(order[lo : lo + self.fed.local_batch])
                logit, _ = self.model(self.ids[b], self.vals[b])
                loss = F.binary_cross_entropy_with_logits(logit, self.y[b])
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():
                    for n, p, g in zip(names, params, grads):
                        if g is None:
                            continue
                        if n in self.tables:
                            p[rows] -= self.fed.lr * g[rows]
                        else:
                            p.sub_(self.fed.lr * g)
        change: dict = {}
        with torch.no_grad():
            for n, p in self.named.items():  # the change, then the working model back to the global weights
                if n in self.tables:
                    change[n] = (rows, p[rows] - start[n])
                    p[rows] = start[n]
                else:
                    change[n] = p - start[n]
                    p.copy_(start[n])
        return change


def train_federated(
    data: SplitData, family: str, cfg: CloudConfig, how: str, seed: int, fed: FederatedConfig = FederatedConfig()
) -> tuple[CTRModel, int]:
    """A ``family`` model trained by ``how`` (``fedavg`` or ``fedsubavg``) on the clients' cloud parts; returns
    (model in eval mode, rounds kept)."""
    if how not in GLOBAL_TRAINING[1:]:
        raise ValueError(f"unknown federated training {how!r}; choose from {GLOBAL_TRAINING[1:]}")
    model = build_model(ModelConfig(family, data.spec.n_slots, data.spec.buckets, cfg.embed_dim, cfg.hidden), seed)
    model.train()
    cloud = data.cloud_idx
    owners = data.user[cloud]
    clients = [cloud[owners == u] for u in np.unique(owners)]
    rng = np.random.default_rng(seed)
    client = _Client(model, data, fed)
    shapes = {n: tuple(p.shape) for n, p in client.named.items()}
    val = torch.from_numpy(np.concatenate(data.val)) if data.val else None
    best, best_state, best_round = float("inf"), None, fed.rounds
    for r in range(1, fed.rounds + 1):
        picked = rng.choice(len(clients), size=min(fed.clients, len(clients)), replace=False)
        changes = [client.update(clients[c], rng) for c in picked]
        weights = np.array([len(clients[c]) for c in picked], dtype=float)
        with torch.no_grad():
            for n, d in aggregate(how, changes, weights, client.tables, shapes).items():
                client.named[n].add_(d)
        if val is not None and (r % fed.eval_every == 0 or r == fed.rounds):
            with torch.no_grad():
                logit = model(client.ids[val], client.vals[val])[0]
                v = float(F.binary_cross_entropy_with_logits(logit, client.y[val]))
            if v < best - 1e-5:
                best, best_round = v, r
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), best_round
