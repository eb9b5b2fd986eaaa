"""Full-scope fine-tuning backtracks instead of diverging. DCN-v2 copies fine-tuned on corrected labels had diverged
(NaN predictions, logloss undefined).

Cause: in the full scope, full-batch gradient descent at the tuned step size (0.5) on corrected labels. The cloud
model is confident about a low-CTR user (logits down to -12); correction lifts the user's skips to soft labels near
p_g, so the first gradient is large, and DCN-v2's cross layers (``x0 * (W x + b) + x``, a cubic in the embeddings
for two layers) make the curvature grow with the weights: each overshoot lands where the next step overshoots more,
until the weights overflow. Fix: the full scope's descent backtracks (a step that does not lower the user's
objective is retried at half the size), so the objective never rises and no weight can run away.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.evaluate.cloud import CloudConfig, train_cloud
from stream_ctr.evaluate.datasets import load
from stream_ctr.evaluate.finetune import FullScope
from stream_ctr.evaluate.split import split_events
from stream_ctr.learning.correction import correct, shrunk_ctr

from .test_experiment import SPEC


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one torch thread, as the harness runs (a second thread is many times slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fine_tune(data, model, k: int, method: str, lr: float = 0.5, steps: int = 20):
    ft = data.ft(k)
    pg = float(data.priors([ft], "aligned")[0])
    y = data.labels[ft]
    scope = FullScope(model, data.ids, data.vals)
    (pred,) = scope.fit_predict(
        ft, data.test[k], correct(y, shrunk_ctr(y.sum(), len(y), pg, 20.0), pg, method, len(y)), lr, 0.01, [steps]
    )
    return pred, scope.losses


def test_the_dcn_user_that_diverged_in_the_seed_0_world_stays_finite():
    """The exact case of docs/results/seeds/synthetic-full/seed-0 (DCN-v2, ft_lc, lr 0.5 / l2 0.01 / 20 steps):
    user #469 (1 click in 36 events) went to NaN at the 11th step before the fix."""
    events, spec, _ = load("synthetic", seed=0)
    data = split_events(events, spec)
    model, _ = train_cloud(data, "dcn", CloudConfig(), seed=0)
    pred, losses = _fine_tune(data, model, 469, "lc")
    assert np.isfinite(pred).all()
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0]  # it still learns: backtracking does not freeze it


@pytest.mark.parametrize("family", ["lr", "fm", "wd", "deepfm", "dcn"])
def test_full_scope_objective_never_rises_even_at_a_huge_step(family):
    data = split_events(
        generate_synthetic(SyntheticConfig(users=30, items=40, events_per_user=30, seed=1)).events, SPEC
    )
    model, _ = train_cloud(data, family, CloudConfig(max_epochs=3, lr=1e-2, hidden=(16, 8)), seed=0)
    for k in range(5):
        pred, losses = _fine_tune(data, model, k, "lc", lr=50.0, steps=10)
        assert np.isfinite(pred).all() and np.isfinite(losses).all()
        assert all(b <= a for a, b in zip(losses, losses[1:])), (family, k, losses)
