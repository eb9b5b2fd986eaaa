"""Model deltas: a scorer that applies the trainer's deltas holds the trainer's weights, for a fraction of the
bytes of full snapshots."""

import numpy as np
import pytest
import torch

from stream_ctr.config import Settings
from stream_ctr.models.delta import Delta
from stream_ctr.models.snapshot import decode_update
from stream_ctr.trainer.global_trainer import GlobalTrainer


def _settings(**kw) -> Settings:
    return Settings(features="category,segment", model_family="deepfm", delta_every=16, **kw)


def _same_tensors(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("dense_every,optimizer", [(1, "adagrad"), (3, "adagrad"), (3, "adam")])
def test_a_scorer_following_the_deltas_holds_the_trainers_weights(make_events, dense_every, optimizer):
    events = make_events(users=30, events_per_user=20, seed=1).events
    # Adam's momentum moves rows a batch did not use: its deltas carry whole tables, and stay exact.
    trainer = GlobalTrainer(_settings(dense_every=dense_every, trainer_optimizer=optimizer, trainer_lr=0.01))
    scorer = trainer.snapshot().build()
    tables = {"linear.weight", "embedding.weight"}
    for n, lo in enumerate(range(0, len(events), 16), start=1):
        trainer.learn_many(events[lo : lo + 16])
        delta = decode_update(trainer.next_delta().to_bytes())
        scorer = scorer.advanced(delta)
        assert scorer.version == trainer.version == n
        want, got = trainer.model.state_dict(), scorer.model.state_dict()
        assert _same_tensors(want, got, tables)  # sparse rows: exact after every delta
        dense = [k for k in want if k not in tables]
        assert _same_tensors(want, got, dense) == (n % dense_every == 0)
    assert scorer.snapshot.samples == trainer.samples and scorer.snapshot.offsets == trainer.offsets


def test_a_delta_carries_only_the_rows_its_samples_used_and_costs_a_fraction_of_a_snapshot(make_events):
    events = make_events(users=30, events_per_user=20, seed=1).events
    trainer = GlobalTrainer(_settings())
    trainer.learn_many(events[:16])
    ids, _ = trainer.encoder.encode_events(events[:16])
    delta = trainer.maybe_delta()
    rows, values = delta.rows["embedding.weight"]
    assert set(rows.tolist()) == set(ids[ids > 0].tolist())
    assert values.shape == (len(rows), trainer.cfg.embed_dim)
    assert delta.dense is None  # dense layers only every dense_every (64) deltas
    assert len(delta.to_bytes()) * 50 < len(trainer.snapshot().to_bytes())


def test_a_full_snapshot_of_weights_no_delta_carried_gets_a_version_of_its_own(make_events):
    trainer = GlobalTrainer(_settings())
    events = make_events(users=4, events_per_user=8, seed=2).events
    trainer.learn_many(events[:16])
    assert trainer.next_delta().version == 1 and trainer.snapshot().version == 1  # the same weights as delta v1
    trainer.learn_many(events[16:])
    snap = trainer.snapshot()  # weights no delta carried: v1 would name two different models
    assert snap.version == 2 and trainer.pending == 0
    assert trainer.next_delta().base == 2


def test_a_delta_is_due_by_samples_or_by_time(make_events):
    import time

    trainer = GlobalTrainer(_settings(delta_interval_s=5.0))  # a delta every 16 samples, or every 5 s
    start = time.monotonic()
    assert trainer.maybe_delta(now=start + 60) is None  # nothing pending, however long it has been
    trainer.learn_many(make_events(users=1, events_per_user=1, seed=2).events)
    assert trainer.pending == 1 and trainer.maybe_delta() is None
    assert trainer.maybe_delta(now=start + 4) is None  # neither 16 samples nor 5 s (the clock started at init)
    assert trainer.maybe_delta(now=start + 5.1).version == 1


def test_a_delta_on_another_base_is_refused(make_events):
    trainer = GlobalTrainer(_settings())
    scorer = trainer.snapshot().build()
    trainer.learn_many(make_events(users=4, events_per_user=8, seed=2).events)
    trainer.next_delta()
    with pytest.raises(ValueError, match="based on v1, not on v0"):
        scorer.advanced(trainer.next_delta())


def test_sparse_adagrad_takes_the_same_steps_as_dense_adagrad(make_events):
    events = make_events(users=30, events_per_user=10, seed=4).events
    sparse = GlobalTrainer(_settings(trainer_optimizer="adagrad"))
    dense = GlobalTrainer(_settings(trainer_optimizer="adagrad"))
    for table in (dense.model.linear, dense.model.embedding):
        table.sparse = False
    dense.optimizer = torch.optim.Adagrad(dense.model.parameters(), lr=dense.settings.trainer_lr)
    assert sparse.model.embedding.sparse
    sparse.learn_many(events)
    dense.learn_many(events)
    for key, value in sparse.model.state_dict().items():
        assert np.allclose(value.numpy(), dense.model.state_dict()[key].numpy(), atol=1e-5), key


def test_delta_bytes_round_trip():
    d = Delta(
        3,
        2,
        0.25,
        100,
        {0: 7, 1: 9},
        1234.5,
        {"embedding.weight": (np.array([5, 9]), np.ones((2, 4), np.float32))},
        {"bias": np.array([0.5], np.float32)},
    )
    back = Delta.from_bytes(d.to_bytes())
    assert (back.version, back.base, back.global_ctr, back.samples, back.offsets, back.published_at) == (
        3,
        2,
        0.25,
        100,
        {0: 7, 1: 9},
        1234.5,
    )
    assert back.rows["embedding.weight"][0].tolist() == [5, 9] and back.dense["bias"].tolist() == [0.5]
    with pytest.raises(ValueError, match="not a stream-ctr model delta"):
        Delta.from_bytes(b"SCTR1...")
