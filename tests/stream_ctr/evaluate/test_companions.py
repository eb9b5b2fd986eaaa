"""The companion methods (ODE, CoDA, FedSubAvg), offline: the ODE buffer keeps the highest-projection samples,
FIFO and reservoir keep what they should, CoDA's filter keeps look-alike samples, FedSubAvg differs from FedAvg
exactly on sparse rows, and the modes and the global-training option run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_ctr.data import generate_synthetic
from stream_ctr.evaluate.companions import (
    CompanionConfig,
    Selector,
    TrainSet,
    buffer_bytes,
    fit_filter,
    ode_values,
    reservoir,
    stream_buffer,
)
from stream_ctr.evaluate.comparisons import compare
from stream_ctr.evaluate.experiment import EvalConfig, run_experiment
from stream_ctr.evaluate.federated import aggregate
from stream_ctr.evaluate.finetune import train_targets
from stream_ctr.evaluate.split import split_events

from .test_experiment import FAST, SMALL, SPEC


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- buffers --------------------------------------------------------------------------------------------------------


def test_streaming_buffer_keeps_the_k_most_valuable_in_arrival_order():
    values = np.array([0.3, -1.0, 2.0, 0.5, 0.1, 1.5, -0.2])
    assert stream_buffer(values, 3).tolist() == [2, 3, 5]
    assert stream_buffer(values, 10).tolist() == list(range(7))  # fewer samples than slots: all kept


def test_ode_value_is_the_projection_on_the_global_gradient_and_the_buffer_keeps_the_highest():
    rng = np.random.default_rng(0)
    g, h, t = rng.normal(size=40), rng.normal(size=(40, 3)), rng.integers(0, 2, 40).astype(float)
    G = np.array([0.5, -1.0, 0.0, 2.0])
    v = ode_values(g, h, t, G)
    resid = 1 / (1 + np.exp(-g)) - t
    np.testing.assert_allclose(v, (resid[:, None] * np.c_[np.ones(40), h]) @ G / np.linalg.norm(G), rtol=1e-6)
    kept = stream_buffer(v, 5)
    assert set(kept) == set(np.argsort(-v)[:5])


def test_ode_selector_keeps_the_highest_projection_samples_of_each_user():
    data = split_events(generate_synthetic(SMALL).events, SPEC)
    rng = np.random.default_rng(1)
    g, h = rng.normal(size=len(data.labels)).astype(np.float32), rng.normal(size=(len(data.labels), 4))
    cfg = CompanionConfig(buffer_k=4)
    sets = Selector("ode", g, h, cfg, seed=0)(data, data.fit, "none", 0.4, 20.0)
    every = np.concatenate(data.fit)
    resid = (1 / (1 + np.exp(-g[every])) - data.labels[every])[:, None]
    G = (resid * np.c_[np.ones(len(every)), h[every]]).mean(axis=0)
    for own, ts in zip(data.fit, sets):
        v = ode_values(g[own], h[own], data.labels[own], G)
        assert len(ts.own) == min(4, len(own))
        assert set(ts.own) == set(own[np.argsort(-v)[: len(ts.own)]])
    fifo = Selector("fifo", g, h, cfg, seed=0)(data, data.fit, "none", 0.4, 20.0)
    assert all((f.own == own[-4:]).all() for f, own in zip(fifo, data.fit))


def test_reservoir_is_uniform_over_the_stream():
    hits = np.zeros(20)
    for s in range(2000):
        kept = reservoir(20, 5, np.random.default_rng(s))
        assert len(kept) == 5 and len(set(kept)) == 5
        hits[kept] += 1
    assert np.abs(hits / 2000 - 0.25).max() < 0.05  # each item kept with probability k / n


def test_buffer_memory_is_stated_in_bytes():
    assert buffer_bytes(8, 3) == 8 * (3 * 12 + 16)


# --- CoDA -----------------------------------------------------------------------------------------------------------


def test_coda_filter_keeps_look_alike_samples_and_drops_the_others():
    rng = np.random.default_rng(0)
    own = rng.normal(loc=[2.0, 0.0, 0.0], scale=0.5, size=(15, 3))
    others = rng.normal(loc=[-1.0, 1.0, 0.0], scale=0.5, size=(60, 3))
    clf = fit_filter(own, others, CompanionConfig())
    alike = rng.normal(loc=[2.0, 0.0, 0.0], scale=0.5, size=(50, 3))
    unlike = rng.normal(loc=[-1.0, 1.0, 0.0], scale=0.5, size=(50, 3))
    assert (clf(alike) >= 0.5).mean() > 0.9
    assert (clf(unlike) >= 0.5).mean() < 0.1


def test_coda_augments_with_other_users_training_period_samples_only():
    data = split_events(generate_synthetic(SMALL).events, SPEC)
    rng = np.random.default_rng(2)
    g, h = np.zeros(len(data.labels), np.float32), rng.normal(size=(len(data.labels), 4)).astype(np.float32)
    sel = Selector("coda", g, h, CompanionConfig(pool_size=500, max_extra=10), seed=0)
    sets = sel(data, data.fit, "lc", 0.4, 20.0)
    assert any(len(ts.extra) for ts in sets)
    for own, ts in zip(data.fit, sets):
        assert (ts.own == own).all() and len(ts.extra) <= 10
        assert (data.part[ts.extra] == 0).all()  # cloud (training-period) events
        assert not np.isin(data.user[ts.extra], data.user[own[0]]).any()  # of other users
    # the extra events train with their own labels, corrected with their owners' prior, at the stated weight
    ts = next(t for t in sets if len(t.extra))
    idx, targets = train_targets(data, ts, "none", 0.4, 20.0)
    assert len(idx) == len(ts.own) + len(ts.extra)
    np.testing.assert_array_equal(targets.labels[len(ts.own) :], data.labels[ts.extra])
    assert np.allclose(targets.weights[len(ts.own) :], 0.5)
    _, lc = train_targets(data, TrainSet(ts.own, ts.extra, np.full(len(ts.extra), 0.9), 0.5), "lc", 0.4, 20.0)
    assert lc.labels[len(ts.own) :].max() < 1.0  # a high-CTR owner's clicks count p_g / p_u


# --- FedAvg / FedSubAvg ---------------------------------------------------------------------------------------------


def test_fedsubavg_differs_from_fedavg_exactly_on_sparse_rows():
    shapes = {"table": (6, 2), "dense": (3,)}
    a = {"table": (torch.tensor([0, 1]), torch.ones(2, 2)), "dense": torch.full((3,), 1.0)}
    b = {"table": (torch.tensor([1, 2]), torch.full((2, 2), 3.0)), "dense": torch.full((3,), 3.0)}
    w = np.array([1.0, 1.0])
    avg = aggregate("fedavg", [a, b], w, {"table"}, shapes)
    sub = aggregate("fedsubavg", [a, b], w, {"table"}, shapes)
    torch.testing.assert_close(avg["dense"], sub["dense"])  # every client holds the dense part: same mean
    torch.testing.assert_close(sub["table"][:3, 0], torch.tensor([1.0, 2.0, 3.0]))  # mean over holders
    torch.testing.assert_close(avg["table"][:3, 0], torch.tensor([0.5, 2.0, 1.5]))  # mean over all: diluted
    assert (avg["table"][3:] == 0).all() and (sub["table"][3:] == 0).all()  # rows no one holds stay
    held_by_all = (avg["table"][1] == sub["table"][1]).all()
    assert held_by_all  # a row every client holds: the same under both


# --- end to end -----------------------------------------------------------------------------------------------------


def test_companion_modes_and_federated_training_run_and_are_compared():
    events = generate_synthetic(SMALL).events
    from dataclasses import replace

    from stream_ctr.evaluate.federated import FederatedConfig

    cfg = EvalConfig(
        models=("fm",),
        modes=("cloud", "ft", "ft_lc", "ft_ode", "ft_fifo", "ft_reservoir", "ft_coda", "ft_lc_coda", "ft_auto"),
        scopes=("head",),
        seed=1,
        companions=CompanionConfig(buffer_k=4, pool_size=300),
        global_training=("fedsubavg", "fedavg", "centralized"),
        federated=FederatedConfig(rounds=6, clients=10, eval_every=3),
        **FAST,
    )
    result = run_experiment(events, SPEC, cfg)
    modes = {r["mode"] for r in result.rows}
    assert {"ft_ode", "ft_coda", "global_fedavg", "global_centralized"} <= modes
    assert all(np.isfinite(r["gauc"]) for r in result.rows)
    assert result.meta["companions"]["buffer_bytes_per_user"] == buffer_bytes(4, SPEC.n_slots)
    pairs = {(r["mode"], r["base"], r["bucket"]) for r in compare([result], n_boot=50)}
    assert ("ft_ode", "ft_fifo", "all") in pairs and ("global_fedavg", "cloud", "all") in pairs  # cloud: fedsubavg
    with pytest.raises(ValueError, match="global-training"):
        replace(cfg, global_training=("fedsgd",))


def test_several_seeds_pool_the_companion_comparisons_over_users_and_seeds(tmp_path, monkeypatch):
    """``--seeds`` with companion modes and several global models writes comparisons.md/.json in the summary
    folder, pooled over the seeds (two-level CIs), as well as each seed's own in DIR/seed-N."""
    import json

    import stream_ctr.evaluate.datasets as ds
    from stream_ctr.data import SyntheticConfig

    from .test_experiment import _cli

    monkeypatch.setattr(
        ds, "SYNTHETIC", SyntheticConfig(users=40, items=60, events_per_user=30, dim=2, categories=6, taste=3.0)
    )
    out = tmp_path / "out"
    argv = ["--dataset", "synthetic", "--models", "fm", "--modes", "ft,ft_ode,ft_fifo,ft_coda"]
    argv += ["--global-training", "centralized,fedavg,fedsubavg", "--fed-rounds", "3", "--buffer-k", "4"]
    argv += ["--pool-size", "200", "--max-epochs", "2", "--bootstrap", "50", "--no-progress", "--no-plots"]
    assert _cli([*argv, "--seeds", "0,1", "--out", str(out)]) == 0

    pooled = json.loads((out / "comparisons.json").read_text())["rows"]
    per_seed = [json.loads((out / f"seed-{s}" / "comparisons.json").read_text())["rows"] for s in (0, 1)]
    key = ("fm", "head", "global_fedsubavg", "global_fedavg", "all")

    def pick(rows):
        return next(r for r in rows if (r["model"], r["scope"], r["mode"], r["base"], r["bucket"]) == key)

    row, seeds = pick(pooled), [pick(rows) for rows in per_seed]
    assert row["delta"] == pytest.approx(np.mean([s["delta"] for s in seeds]))  # the mean over seeds
    assert row["users"] == sum(s["users"] for s in seeds)  # both seeds' users
    assert row["ci"][0] <= row["delta"] <= row["ci"][1]
    assert {(r["mode"], r["base"]) for r in pooled} >= {("ft_ode", "ft_fifo"), ("ft_coda", "ft")}
    assert {r["bucket"] for r in pooled} == {"all"}  # every synthetic user has as many events: no terciles
    md = (out / "comparisons.md").read_text()
    assert "seeds [0, 1]" in md and "users and seeds" in md and "| fm | head | global_fedsubavg − global_fedavg |" in md
