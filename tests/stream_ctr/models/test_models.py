"""Contract tests generated over every model family."""

import numpy as np
import pytest
import torch

from stream_ctr.config import Settings
from stream_ctr.models import FAMILIES, ModelConfig, build_model
from stream_ctr.models.snapshot import Snapshot
from stream_ctr.quality.metrics import auc
from stream_ctr.trainer.global_trainer import GlobalTrainer

FAMILY_NAMES = sorted(FAMILIES)


def _batch(n=16, slots=5, buckets=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, buckets, (n, slots), generator=g), torch.rand(n, slots, generator=g)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_output_contract(family):
    model = build_model(ModelConfig(family, slots=5, buckets=256), seed=0)
    logit, rep = model(*_batch())
    assert logit.shape == (16,)
    assert rep.shape == (16, model.rep_dim)
    assert torch.isfinite(logit).all() and torch.isfinite(rep).all()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_seeded_build_is_deterministic(family):
    cfg = ModelConfig(family, slots=5, buckets=256)
    a, b = build_model(cfg, seed=3), build_model(cfg, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_snapshot_roundtrip_scores_identically(family, make_events):
    settings = Settings.from_env({}, model_family=family, features="category,segment", hash_buckets=512)
    trainer = GlobalTrainer(settings)
    events = make_events(users=20, events_per_user=20).events
    trainer.learn_many(events)
    snap = Snapshot.from_bytes(trainer.snapshot().to_bytes())
    assert snap.family == family and snap.samples == len(events)
    loaded = snap.build()
    logit, rep = loaded.forward(events[:50])
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), trainer.predict_proba(events[:50]), rtol=1e-5, atol=1e-6)
    assert rep.shape == (50, loaded.rep_dim)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_learns_synthetic_clicks(family, make_events):
    # Strong per-user priors: what every family can learn from user ids alone.
    data = make_events(users=150, events_per_user=60, drift=1.5, seed=1)
    settings = Settings.from_env(
        {}, model_family=family, features="category,segment", hash_buckets=4096, trainer_lr=0.01
    )
    trainer = GlobalTrainer(settings)
    train, test = data.events[:7000], data.events[7000:]
    y = np.array([e.label for e in test])
    untrained = auc(y, trainer.predict_proba(test))
    for _ in range(3):
        trainer.learn_many(train)
    score = auc(y, trainer.predict_proba(test))
    assert score > 0.65 and score > untrained + 0.1, f"{family}: AUC {untrained:.3f} -> {score:.3f}"


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_the_trainer_learns_with_either_optimiser(optimizer, make_events):
    data = make_events(users=150, events_per_user=60, drift=1.5, seed=1)
    settings = Settings.from_env(
        {},
        features="category,segment",
        hash_buckets=4096,
        trainer_optimizer=optimizer,
        trainer_lr=0.01 if optimizer == "adam" else 0.05,
    )
    trainer = GlobalTrainer(settings)
    assert type(trainer.optimizer).__name__.lower() == optimizer
    train, test = data.events[:7000], data.events[7000:]
    y = np.array([e.label for e in test])
    trainer.learn_many(train)
    assert auc(y, trainer.predict_proba(test)) > 0.65


def test_the_trainer_learns_every_event_but_the_one_that_raises(make_events):
    events = make_events(users=10, events_per_user=10, seed=3).events
    settings = Settings.from_env({}, features="category,segment", hash_buckets=2048, trainer_batch=8)
    trainer, twin = GlobalTrainer(settings), GlobalTrainer(settings)
    encode = trainer.encoder.encode

    def encode_or_raise(rows):
        rows = list(rows)
        if any(r[1] == events[13].item_id and r[0] == events[13].user_id for r in rows):
            raise ValueError("a bug one event meets")
        return encode(rows)

    trainer.encoder.encode = encode_or_raise
    failed = trainer.learn_many(events)
    assert [(e.event_id, type(exc)) for e, exc in failed] == [(events[13].event_id, ValueError)]
    assert trainer.samples == len(events) - 1 == trainer.pending
    assert trainer.clicks == sum(e.label for e in events) - events[13].label
    # Not one step twice: the samples of a slice that raised were trained once, in its parts.
    twin.learn_many([e for e in events if e is not events[13]])
    assert twin.samples == trainer.samples


def test_the_mini_batch_grows_with_the_backlog_up_to_its_cap(make_events):
    settings = Settings.from_env(
        {}, features="category,segment", hash_buckets=2048, trainer_batch=8, trainer_batch_max=128
    )
    trainer = GlobalTrainer(settings)
    sizes = {backlog: trainer.batch_for(backlog) for backlog in (0, 8, 255, 256, 1023, 1024, 4096, 10**6)}
    assert sizes == {0: 8, 8: 8, 255: 8, 256: 16, 1023: 32, 1024: 64, 4096: 128, 10**6: 128}
    events = make_events(users=10, events_per_user=30, seed=3).events
    steps = []
    step = GlobalTrainer._step
    trainer._step = lambda chunk: (steps.append(len(chunk)), step(trainer, chunk))
    assert trainer.learn_many(events, backlog=1024) == []
    assert steps == [64] * 4 + [44] and trainer.samples == 300 and trainer.last_batch == 64
